import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import assert_one_line_error, cli
from trtllm_kit.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["quickstart", "shortened-llama", "shortened-llama-quick"])
def test_shipped_recipes_parse(name):
    rec = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    assert rec.models and rec.backends


def test_paper_recipe_is_the_full_study():
    rec = load_recipe(ROOT / "recipes" / "shortened-llama.yaml")
    assert rec.sweep.batches == [1, 8, 16, 32, 64, 128, 256, 384]
    assert rec.sweep.inputs == [12, 82] and rec.sweep.outputs == [128, 512]
    assert len(rec.models) == 12


def test_run_does_everything_and_reuses_artifacts(tmp_path):
    rec = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    rec["sweep"] = {"batches": [1, 2], "inputs": [6], "outputs": [4], "warmup": 0, "repeats": 1,
                    "step_tokens": [16], "step_past": 8}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(rec))
    out = tmp_path / "out"
    first = cli("run", str(path), "--out", str(out), check=True)
    assert "not timed:" in first.stdout and "no GPU to run it" in first.stdout
    assert (out / "report" / "report.html").is_file() and (out / "results.json").is_file()
    for m in rec["models"]:
        assert (out / "engines" / m / "model.engine").is_file()
    second = cli("run", str(path), "--out", str(out), check=True)
    assert second.stderr.count("reusing export") == 3 and second.stderr.count("reusing engine") == 3


def test_a_failed_engine_build_is_the_reason_its_points_give(tmp_path):
    """An engine that could not be built is why its trt points were not timed, in results.json too (TensorRT's
    words first; the CPU's "no GPU" comes after them)."""
    import json

    path = tmp_path / "r.yaml"
    sweep = {"batches": [1], "inputs": [6], "outputs": [4], "warmup": 0, "repeats": 1, "step_tokens": []}
    path.write_text(yaml.safe_dump({  # known to fail only once TensorRT builds: no kernel fits a 1 KB workspace
        "models": ["tiny-llama"], "backends": ["trt"], "engine": {"workspace_gb": 1e-6}, "sweep": sweep}))
    out = tmp_path / "out"
    proc = cli("run", str(path), "--out", str(out))
    assert proc.returncode != 0 and "nothing was timed" in proc.stderr  # and the reasons are in results.json:
    points = json.loads((out / "results.json").read_text())["points"]
    assert points and all(p["message"].startswith("engine not built: TensorRT build failed: ") and
                          "workspace" in p["message"] for p in points), points


def test_engines_that_cannot_be_built_here_are_refused_before_any_export(tmp_path, monkeypatch):
    """A recipe's engine options that this machine's TensorRT can never build (TensorRT-RTX here: no plugins;
    --kv-mode auto choosing inplace), or limits that miss the sweep, are one line before anything is exported."""
    sweep = {"batches": [1, 4], "inputs": [6], "outputs": [4], "warmup": 0, "repeats": 1, "step_tokens": []}
    cases = [({"kv_mode": "plugin"}, "the engine options cannot be built here: engine.kv_mode: plugin: tensorrt-rtx"),
             ({"rope": "plugin"}, "engine.rope: plugin: it feeds the attention of engine.kv_mode: plugin or "
                                  "portable-static, not engine.kv_mode: inplace (engine.kv_mode: auto chose the inplace "
                                  "layout here)"),
             ({"kv_mode": "portable-static", "rope": "plugin", "norm": "plugin"},
              "use engine.norm and engine.rope: auto or trt"),  # the fix that works here, in the recipe's words
             ({"max_batch": 2, "max_input": 6, "max_seq": 10}, "the engine limits miss the sweep point batch 4"),
             ({"weights": "inputs", "dtype": "bf16"}, "engine.weights: inputs cannot store a bf16 export's weights")]
    cases.append(({}, "TRTLLM_KIT_GEMV=banana is not one of 1, 0"))  # an A/B knob, checked like the options
    for k, (engine, words) in enumerate(cases):
        if "TRTLLM_KIT_GEMV" in words:
            monkeypatch.setenv("TRTLLM_KIT_GEMV", "banana")
        path = tmp_path / f"r{k}.yaml"
        dtype = {"dtype": engine.pop("dtype")} if "dtype" in engine else {}
        path.write_text(yaml.safe_dump({"models": ["tiny-llama"], "backends": ["eager", "trt"], "engine": engine,
                                        "sweep": sweep, **dtype}))
        out = tmp_path / f"out{k}"
        proc = cli("run", str(path), "--out", str(out))
        assert_one_line_error(proc, words)
        assert not re.search(r"--(kv-mode|gemm|norm|rope|weights)\b", proc.stderr), proc.stderr  # recipe keys, not flags
        assert not (out / "onnx").exists() and not (out / "results.json").exists()
    monkeypatch.delenv("TRTLLM_KIT_GEMV")
    # a sweep longer than the model's context: the engine could not be built, said before the export
    from conftest import save_hf_llama

    ckpt = save_hf_llama(tmp_path / "short-ctx", max_position_embeddings=64)
    path.write_text(yaml.safe_dump({"models": [str(ckpt)], "backends": ["eager", "trt"],
                                    "sweep": {**sweep, "inputs": [50], "outputs": [20]}}))
    assert_one_line_error(cli("run", str(path), "--out", str(tmp_path / "ctx")),
                          "the engine would hold 70 positions (max_seq), more than the model's "
                          "max_position_embeddings 64")
    assert not (tmp_path / "ctx").exists()
    # an engine directory of the user's own where the run would build one: refused now, the files kept
    path.write_text(yaml.safe_dump({"models": ["tiny-llama"], "backends": ["eager", "trt"], "sweep": sweep}))
    mine = tmp_path / "out" / "engines" / "tiny-llama"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    assert_one_line_error(cli("run", str(path), "--out", str(tmp_path / "out")),
                          f"engine directory {mine} already exists and was not created by trtllm-kit as an engine")
    assert (mine / "notes.txt").read_text() == "mine" and not (tmp_path / "out" / "onnx").exists()


def test_a_user_file_in_an_engine_a_changed_recipe_would_rebuild_is_refused_first(tmp_path):
    """The toolkit's engine directory holding a user's file is reused as it is; once the recipe changes the engine
    (here its limits, through the sweep), the rebuild could not replace it: refused before any work, the file kept
    (a fresh user saw the export and eager run first, and the trt points skipped)."""
    sweep = {"batches": [1], "inputs": [6], "outputs": [4], "warmup": 0, "repeats": 1, "step_tokens": []}
    path, out = tmp_path / "r.yaml", tmp_path / "out"
    path.write_text(yaml.safe_dump({"models": ["tiny-llama"], "backends": ["eager", "trt"], "sweep": sweep}))
    cli("run", str(path), "--out", str(out))  # builds the engine (trt itself cannot run here)
    engine = out / "engines" / "tiny-llama"
    assert (engine / "engine.json").is_file()
    (engine / "notes.txt").write_text("mine")
    proc = cli("run", str(path), "--out", str(out))  # unchanged: reused, the note untouched
    assert "reusing engine" in proc.stderr and (engine / "notes.txt").read_text() == "mine"
    path.write_text(yaml.safe_dump({"models": ["tiny-llama"], "backends": ["eager", "trt"],
                                    "sweep": {**sweep, "batches": [1, 2]}}))
    before = (out / "results.json").read_text()
    assert_one_line_error(cli("run", str(path), "--out", str(out)), "the engine would be rebuilt (limits changed), "
                          "but engine directory", "holds notes.txt")
    assert (engine / "notes.txt").read_text() == "mine" and (out / "results.json").read_text() == before


def test_checks_before_export_leave_what_they_cannot_judge_to_the_run(tmp_path):
    """What the early checks must not refuse: a machine with no TensorRT (eager is still timed; the trt points say
    why), an engine directory of the toolkit's own with a note of the user's in it (reused, as before), and bench's
    sweep flags over a recipe whose limits follow the sweep."""
    import json
    import sys

    sweep = {"batches": [1], "inputs": [4], "outputs": [2], "warmup": 0, "repeats": 1, "step_tokens": []}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"models": ["tiny-llama"], "backends": ["eager", "trt"], "sweep": sweep}))
    block = ("import sys; sys.modules['tensorrt_rtx_bindings'] = None; sys.modules['tensorrt'] = None; "
             "sys.modules['tensorrt_rtx'] = None; from trtllm_kit.cli import entry; sys.exit(entry())")
    out = tmp_path / "none"
    proc = subprocess.run([sys.executable, "-c", block, "run", str(path), "--out", str(out)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-1500:]
    points = json.loads((out / "results.json").read_text())["points"]
    assert {p["backend"]: p["status"] for p in points} == {"eager": "ok", "trt": "skipped"}
    assert "no TensorRT is installed" in next(p["message"] for p in points if p["backend"] == "trt")
    out = tmp_path / "own"
    cli("run", str(path), "--out", str(out), check=True)
    (out / "engines" / "tiny-llama" / "NOTES.txt").write_text("mine")
    again = cli("run", str(path), "--out", str(out), check=True)
    assert "reusing engine" in again.stderr and (out / "engines" / "tiny-llama" / "NOTES.txt").read_text() == "mine"
    proc = cli("bench", "tiny-llama", "--recipe", str(path), "--input", "20", "--work", str(tmp_path / "w"),
               "--out", str(tmp_path / "b.json"), check=True)  # the recipe's limits (max_input 4) refit to 20
    assert "engine limits miss" not in proc.stderr


def test_bad_recipes_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [tiny-llama]\nbackends: [eager]\nsweeep: {}\n")
    assert_one_line_error(cli("run", str(bad)), "sweeep: unknown key")
    bad.write_text("models: [tiny-llama]\nbackends: [eager]\nsweep: {batch: [1]}\n")
    assert_one_line_error(cli("run", str(bad)), "sweep.batch: unknown key")
    assert_one_line_error(cli("run", str(tmp_path / "missing.yaml")), "does not exist")
    bad.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    assert_one_line_error(cli("run", str(bad)), "not valid YAML")
    bad.write_text("models: [tiny-llama\nbackends: [eager]\n")  # an unclosed list: where, as an editor counts
    assert_one_line_error(cli("run", str(bad)), "is not valid YAML (line 2, column 9)")
    bad.write_bytes(b"models: [tiny-llama]\nbackends: [\xff]\n")
    assert_one_line_error(cli("run", str(bad)), "is not UTF-8 text (byte 32)")
    # an impossible engine is refused before anything is exported or timed
    bad.write_text("models: [tiny-llama]\nbackends: [eager, trt]\nengine: {gemm: plugin, kv_mode: plugin}\n")
    out = tmp_path / "out"
    assert_one_line_error(cli("run", str(bad), "--out", str(out)),
                          "engine: gemm: plugin needs kv_mode: plugin or portable-static, and weights: inputs",
                          "weights: engine")
    assert not out.exists()
    # the RMSNorm plugin in the portable-static layout where the plugin library cannot load (TensorRT-RTX): refused
    # before the export, as the builder words it, with the recipe's keys
    bad.write_text("models: [tiny-llama]\nbackends: [eager, trt]\nengine: {norm: plugin, kv_mode: portable-static}\n")
    assert_one_line_error(cli("run", str(bad), "--out", str(out)), "engine.norm: plugin: tensorrt-rtx")
    assert not out.exists()
    # bench's --kv-mode overrides the recipe's: the plugin options it no longer fits are refused before work too
    bad.write_text("models: [tiny-llama]\nbackends: [trt]\nengine: {norm: plugin, kv_mode: plugin}\n")
    work = tmp_path / "work"
    assert_one_line_error(cli("bench", "tiny-llama", "--recipe", str(bad), "--kv-mode", "inplace", "--work", str(work),
                              "--out", str(tmp_path / "r.json")), "engine.norm: plugin", "not with --kv-mode inplace")
    assert not work.exists() and not (tmp_path / "r.json").exists()


def test_ci_runs_the_readme_commands_exactly():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    install, main_job = blocks[0].strip().splitlines()
    test_cmd = blocks[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert install in ci and test_cmd in ci
    assert "recipes/quickstart.yaml" in main_job


def test_readme_main_job_runs_as_written(tmp_path):
    """The README's main job, verbatim (minus the venv activation the test already runs inside), in a
    copy of the recipes so that the user's own artifacts/quickstart is never touched."""
    import shutil
    import subprocess

    readme = (ROOT / "README.md").read_text()
    main_job = re.findall(r"```bash\n(.*?)```", readme, re.S)[0].strip().splitlines()[1]
    cmd = main_job.split("&&", 1)[1].strip() if main_job.startswith(". .venv/bin/activate") else main_job
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    out = tmp_path / "artifacts" / "quickstart"
    proc = subprocess.run(cmd, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "report:" in proc.stdout and (out / "report" / "report.html").is_file()
    import json

    res = json.loads((out / "results.json").read_text())
    statuses = {(p["backend"], p["status"]) for p in res["points"]}
    assert ("eager", "ok") in statuses and ("ort", "ok") in statuses
    for m in ("tiny-llama", "tiny-llama-depth", "tiny-llama-width"):
        assert (out / "engines" / m / "model.engine").is_file()
