import csv
import json

import pytest

from conftest import assert_one_line_error, cli
from trtllm_kit.bench.backends import RunOptions
from trtllm_kit.bench.results import SweepConfig
from trtllm_kit.bench.sweep import bench
from trtllm_kit.pipeline import ensure_export, resolve_model

POINT_FIELDS = {"latency_mean_s", "latency_p50_s", "latency_p90_s", "throughput_tok_s", "ttft_s", "decode_step_ms",
                "ms_per_token", "peak_mem_gb", "status"}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    arts = []
    for name in ("tiny-llama", "tiny-llama-width"):
        art = resolve_model(name)
        ensure_export(art, root / "onnx" / name, progress=False)
        arts.append(art)
    # 2_000_000_000 sequences cannot be allocated on this machine: that point must be recorded as oom
    cfg = SweepConfig(batches=[1, 2_000_000_000, 4], inputs=[8], outputs=[6], warmup=1, repeats=3, step_tokens=[16, 32],
                      step_past=16)
    bench(arts, ["eager", "ort", "trt"], cfg, root / "results.json", RunOptions("cpu", "fp16"), progress=False)
    return json.loads((root / "results.json").read_text()), root / "results.json"


def test_results_have_every_point_with_its_numbers(results):
    res, path = results
    pts = res["points"]
    assert len(pts) == 2 * 3 * 3
    for p in pts:
        if p["backend"] == "trt":
            assert p["status"] == "skipped" and "no GPU" in p["message"]
        elif p["batch"] == 2_000_000_000:
            assert p["status"] == "oom", p
        else:
            assert POINT_FIELDS <= set(p) and p["status"] == "ok"
            assert p["runs"] == 3 and p["warmup_runs"] == 1
            assert p["latency_p50_s"] <= p["latency_p90_s"]
            assert p["throughput_tok_s"] == pytest.approx(p["batch"] * 6 / p["latency_mean_s"])
            assert 0 < p["ttft_s"] < p["latency_mean_s"]
    # the sweep went on after the oom point: batch 4 was timed for every model/backend
    assert all(p["status"] == "ok" for p in pts if p["batch"] == 4 and p["backend"] != "trt")


def test_environment_block_and_csv_twin(results):
    res, path = results
    env = res["env"]
    for key in ("device", "torch", "transformers", "onnxruntime", "toolkit", "command", "time"):
        assert key in env
    assert env["device"] == "CPU only" and env.get("tensorrt-rtx")
    rows = list(csv.DictReader(path.with_suffix(".csv").open()))
    assert len(rows) == len(res["points"]) and rows[0]["latency_mean_s"]
    assert json.loads(path.read_text())["format"] == "trtllm-kit-bench/4"


def test_correctness_checks_against_eager(results):
    res, _ = results
    checks = {(c["model"], c["backend"]): c for c in res["correctness"]}
    assert checks[("tiny-llama", "eager")]["reference"]
    assert checks[("tiny-llama", "ort")]["checked_tokens"] == 16
    assert checks[("tiny-llama-width", "ort")]["first_mismatch"] is None or isinstance(
        checks[("tiny-llama-width", "ort")]["first_mismatch"], int)
    assert checks[("tiny-llama", "trt")]["status"] == "skipped"


def test_step_sweep(results):
    res, _ = results
    ok = [s for s in res["step_sweep"] if s["status"] == "ok"]
    assert {(s["backend"], s["tokens"]) for s in ok} >= {("eager", 16), ("ort", 32)}
    assert all(s["ms_per_token"] == pytest.approx(s["step_ms"] / s["tokens"]) for s in ok)


def test_bench_cli(tmp_path):
    out = tmp_path / "r.json"
    proc = cli("bench", "tiny-llama-depth", "--backends", "eager,ort", "--batch", "1,2", "--input", "6", "--output", "4",
               "--warmup", "0", "--repeats", "2", "--device", "cpu", "--work", str(tmp_path / "w"), "--out", str(out),
               "--kv-mode", "portable", check=True)
    assert "throughput" in proc.stdout and out.is_file() and out.with_suffix(".csv").is_file()
    # stderr is a pipe here: a line per timed point instead of a bar; an engine flag without trt is said to do nothing
    assert "bench [4/4] tiny-llama-depth / ort in6 out4 M2: " in proc.stderr and "tok/s" in proc.stderr
    assert "warning: --kv-mode only changes the trt backend, which this run does not time" in proc.stderr
    assert_one_line_error(cli("bench", "tiny-llama", "--backends", "nope", "--out", str(tmp_path / "x.json"),
                              "--device", "cpu", "--batch", "1", "--input", "4", "--output", "2"), "unknown backend")


def test_runs_made_apart_are_checked_against_eager_tokens(tmp_path):
    """A sweep without eager leaves its greedy check open (never "match"); the tokens it keeps are compared
    with an eager run's from another file, as scripts/bench_trt.py merges runs made in separate processes."""
    from trtllm_kit.bench.results import BenchResults, compare_with_eager

    art = resolve_model("tiny-llama")
    ensure_export(art, tmp_path / "onnx", progress=False)
    cfg = SweepConfig(batches=[1], inputs=[4], outputs=[2], warmup=0, repeats=1, step_tokens=[])
    alone = bench([art], ["ort"], cfg, tmp_path / "ort.json", RunOptions("cpu", "fp16"), progress=False)
    (c,) = alone.correctness
    assert c.matches_eager is None and not c.reference and c.verdict().startswith("not checked")
    assert len(c.tokens) == 2 and len(c.tokens[0]) == 16
    eager = bench([art], ["eager"], cfg, tmp_path / "eager.json", RunOptions("cpu", "fp16"), progress=False)
    together = bench([art], ["eager", "ort"], cfg, tmp_path / "both.json", RunOptions("cpu", "fp16"), progress=False)
    merged = compare_with_eager(BenchResults.load(tmp_path / "eager.json").correctness + alone.correctness)
    assert merged[1].matches_eager is together.correctness[1].matches_eager is not None
    assert merged[1].first_mismatch == together.correctness[1].first_mismatch
    # a token changed at position 5 of the second sequence: the first mismatch is found there
    bad = c.model_copy(update={"tokens": [c.tokens[0], c.tokens[1][:5] + [c.tokens[1][5] + 1] + c.tokens[1][6:]]})
    (_, worse) = compare_with_eager(eager.correctness + [bad])
    assert worse.matches_eager is False and worse.first_mismatch <= 5
    # fewer tokens than the check made (a cut or edited file) is no evidence: it stays unchecked
    cut = c.model_copy(update={"tokens": [row[:3] for row in c.tokens]})
    (_, unsure) = compare_with_eager(eager.correctness + [cut])
    assert unsure.matches_eager is None


def test_bench_trt_report_merges_runs_made_apart(tmp_path):
    """scripts/bench_trt.py --report-only: results-*.json from subfolders (one process per model and layout, a
    partial one from a stopped run) become one results.json whose greedy checks are compared with eager's; files
    that are not one such run, another sweep, another model under the same label, a duplicate, or a results.json
    it did not write are refused in one line before anything is written."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from trtllm_kit.bench.results import BenchResults

    art = resolve_model("tiny-llama")
    ensure_export(art, tmp_path / "onnx", progress=False)
    cfg = SweepConfig(batches=[1, 2], inputs=[4], outputs=[2], warmup=0, repeats=1, step_tokens=[])
    out = tmp_path / "r"
    bench([art], ["eager"], cfg, out / "eager" / "results-eager.json", RunOptions("cpu", "fp16"), progress=False)
    # ONNX Runtime's real tokens stand in for an engine run (no GPU here), saved as bench_trt.py names them
    ort = bench([art], ["ort"], cfg, tmp_path / "ort.json", RunOptions("cpu", "fp16"), progress=False)

    def as_trt(res):
        return res.model_copy(update={"backends": ["trt"], **{k: [x.model_copy(update={"backend": "trt"})
                                                                   for x in getattr(res, k)]
                                                               for k in ("points", "correctness", "step_sweep")}})

    as_trt(ort).save(out / "a" / "results-portable.json")
    as_trt(ort).model_copy(update={"partial": True}).save(out / "b" / "results-plugin.partial.json")
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_trt.py"

    def merge(where):
        return subprocess.run([sys.executable, str(script), "--report-only", "--out", str(where)],
                              capture_output=True, text=True)

    proc = merge(out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    merged = BenchResults.load(out / "merged" / "results.json")
    assert merged.backends[0] == "eager" and set(merged.backends) == {"eager", "trt:plugin", "trt:portable"}
    assert merged.partial
    checks = {c.backend: c for c in merged.correctness}
    assert checks["eager"].reference and checks["trt:portable"].matches_eager is not None
    assert checks["trt:plugin"].matches_eager == checks["trt:portable"].matches_eager
    assert f"16-token greedy check trt:portable: {checks['trt:portable'].verdict()}" in proc.stdout
    assert (out / "merged" / "report" / "report.html").is_file()
    page = (out / "merged" / "report" / "report.md").read_text()
    assert f"Sources: {out / 'merged' / 'results.json'}" in page and ".partial-" not in page
    assert merge(out).returncode == 0  # its own merge is replaced, and not read as a run

    def refused(where, words, *extra):
        before = (where / "merged").exists()
        p = subprocess.run([sys.executable, str(script), "--report-only", "--out", str(where), *extra],
                           capture_output=True, text=True)
        assert p.returncode == 2 and words in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
        assert (where / "merged").exists() == before  # nothing written

    refused(out, "which the results under", "--models", "nosuch")
    for flags, words in ((("--norm", "plugin", "--kv-modes", "inplace"),
                          "--kv-modes inplace: --norm plugin: it ships in the toolkit's plugin library"),
                         (("--gemm", "plugin", "--kv-modes", "plugin"), "--gemm plugin: it reads the weight matrices")):
        for backends in ("trt", "eager, trt"):  # refused before any work (here: before the check for a GPU)
            p = subprocess.run([sys.executable, str(script), "--backends", backends, "--work", str(tmp_path / "w"),
                                "--out", str(tmp_path / "o"), *flags], capture_output=True, text=True)
            assert p.returncode == 2 and words in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    refused(tmp_path / "none", "is not a directory")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", "no results-*.json")
    bad = tmp_path / "bad"
    shutil.copytree(out / "eager", bad / "eager")
    ort.save(bad / "x" / "results-ort.json")  # another backend
    refused(bad, "not one bench_trt.py run")
    shutil.rmtree(bad / "x")
    as_trt(ort).save(bad / "y" / "results-.json")  # no layout name
    refused(bad, "is no layout name")
    shutil.rmtree(bad / "y")
    as_trt(ort).save(bad / "a" / "results-portable.json")
    shutil.copy(bad / "a" / "results-portable.json", bad / "a" / "results-again.json")
    as_trt(ort).save(bad / "a2" / "results-portable.json")
    refused(bad, "is in both")  # the same model and layout twice
    shutil.rmtree(bad / "a2")
    (bad / "a" / "results-again.json").unlink()
    d = json.loads((bad / "a" / "results-portable.json").read_text())
    for path, change, words in ((("models", 0, "params"), 1, "different models as tiny-llama"),
                                (("config", "seed"), 7, "seed 7 vs 0"), (("config", "repeats"), 5, "runs 6 vs 1")):
        e = json.loads(json.dumps(d))
        node = e
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] += change
        (bad / "a" / "results-portable.json").write_text(json.dumps(e))
        refused(bad, words)
    (bad / "a" / "results-portable.json").write_text(json.dumps(d))
    (bad / "merged").mkdir()  # a folder of the user's where the merge would go: kept
    (bad / "merged" / "mine.txt").write_text("mine")
    refused(bad, "merged")
    assert (bad / "merged" / "mine.txt").read_text() == "mine" and len(list((bad / "merged").iterdir())) == 1


def test_compiled_table_takes_engine_columns_from_bench_trt(tmp_path):
    """scripts/bench_compiled.py --trt-results: each TensorRT layout of a bench_trt.py results file is a column
    with its ratio over compiled, and its greedy check is made against the eager run in the table."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "bench_compiled", Path(__file__).resolve().parent.parent / "scripts" / "bench_compiled.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    art = resolve_model("tiny-llama")
    ensure_export(art, tmp_path / "onnx", progress=False)
    cfg = SweepConfig(batches=[1], inputs=[4], outputs=[2], warmup=0, repeats=1, step_tokens=[])
    eager = bench([art], ["eager"], cfg, tmp_path / "tiny-llama.json", RunOptions("cpu", "fp16"), progress=False)
    ort = bench([art], ["ort"], cfg, tmp_path / "other.json", RunOptions("cpu", "fp16"), progress=False)
    # bench_trt.py's merged file names its engines trt:<layout>; an ONNX Runtime run stands in (no GPU here)
    renamed = ort.model_copy(update={
        "points": [p.model_copy(update={"backend": "trt:portable"}) for p in ort.points],
        "correctness": [c.model_copy(update={"backend": "trt:portable"}) for c in ort.correctness]})
    renamed.save(tmp_path / "trt" / "results.json")
    text = mod.table([eager, mod.trt_only(tmp_path / "trt" / "results.json")])
    assert "| trt:portable tok/s |" in text and "| trt:portable / compiled |" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| tiny-llama | trt:portable |"))
    assert "not checked" not in row and ("| match |" in row or "first mismatch" in row)
    from trtllm_kit.errors import ToolkitError

    with pytest.raises(ToolkitError, match="missing.json does not exist"):
        mod.trt_only(tmp_path / "missing.json")
    mod.check_one_sweep([eager, renamed])
    other = renamed.model_copy(update={"config": renamed.config.model_copy(update={"outputs": [3]})})
    with pytest.raises(ToolkitError, match=r"outputs \[3\] vs \[2\]"):
        mod.check_one_sweep([eager, other])
    with pytest.raises(ToolkitError, match="in two results files"):
        mod.check_one_sweep([eager, renamed, renamed])


def test_environment_records_the_ab_variables_set(monkeypatch):
    """A result says which A/B variables (``TRTLLM_KIT_*``, engines/README.md) it was measured with, and none when
    none is set: two runs of an A/B are otherwise indistinguishable in their files."""
    from trtllm_kit.bench.env import environment

    for k in [k for k in __import__("os").environ if k.startswith("TRTLLM_KIT_")]:
        monkeypatch.delenv(k)
    assert "knobs" not in environment()
    monkeypatch.setenv("TRTLLM_KIT_PAST_ATTENTION", "matmul")
    assert environment()["knobs"] == {"TRTLLM_KIT_PAST_ATTENTION": "matmul"}


def test_an_export_that_is_no_longer_whole_is_made_again(tmp_path, caplog):
    """``ensure_export`` reuses an export only while it is whole: a ``model.onnx`` changed after the export (or an
    external data file deleted or cut short: ``verify_onnx``) is exported again instead of failing the build later
    (the H200 session deletes a 7B export's data file after its engine is built)."""
    import logging

    art = resolve_model("tiny-llama")
    out = tmp_path / "onnx"
    ensure_export(art, out, progress=False)
    with caplog.at_level(logging.INFO, logger="trtllm_kit"):
        ensure_export(resolve_model("tiny-llama"), out, progress=False)
    assert "reusing export" in caplog.text
    with open(out / "model.onnx", "ab") as f:
        f.write(b"\0")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trtllm_kit"):
        ensure_export(resolve_model("tiny-llama"), out, progress=False)
    assert "reusing export" not in caplog.text and "was changed after the export" in caplog.text
    from trtllm_kit.export.manifest import ExportManifest

    ExportManifest.load(out).verify_onnx(out)  # whole again
