"""Real checkpoints and bad input, fixed by kind (issue 8): each input is rebuilt as a tiny random model.

Every case asserts what a user sees: one clear line and a non-zero exit, nothing half-written,
nothing the toolkit did not create touched, and no silent wrong result.
"""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch
import yaml

from conftest import assert_clean_failure, assert_one_line_error, cli, save_hf_llama

FAST = ("--batch", "1", "--input", "4", "--output", "2", "--warmup", "0", "--repeats", "1", "--device", "cpu")


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    return save_hf_llama(tmp_path_factory.mktemp("hf") / "ckpt")


def _entries(path):
    return sorted(p.name for p in path.iterdir())


# -- silent wrong results ------------------------------------------------------------------------
@pytest.mark.parametrize("act", ["relu", "gelu", "gelu_pytorch_tanh"])
def test_hidden_act_is_honoured_and_validated_against_transformers(tmp_path, act):
    """A non-SiLU activation used to export, 'validate' against the toolkit's own SiLU reference, and differ
    from transformers from the first token. Now the graph computes it, and validation runs transformers."""
    from transformers import LlamaForCausalLM

    from trtllm_kit.runtime.eager import eager_runner

    ckpt = save_hf_llama(tmp_path / act, hidden_act=act)
    proc = cli("export", str(ckpt), "--out", str(tmp_path / "o"), "--dtype", "fp32", check=True)
    assert "vs transformers LlamaForCausalLM" in proc.stdout and "greedy tokens 20/20" in proc.stdout
    from trtllm_kit.models import load_model

    spec, weights = load_model(str(ckpt))
    assert spec.hidden_act == act
    ids = torch.randint(3, 300, (2, 7), generator=torch.Generator().manual_seed(1))
    hf = LlamaForCausalLM.from_pretrained(ckpt).eval()
    want = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8,
                       eos_token_id=None)[:, 7:]
    with eager_runner(spec, weights, "fp32") as eager:  # the eager baseline is transformers with the real config
        assert torch.equal(eager.generate(ids, torch.ones_like(ids), 8).tokens, want)


def test_unsupported_activation_is_rejected(tmp_path):
    ckpt = save_hf_llama(tmp_path / "c")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["hidden_act"] = "mish"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    assert_one_line_error(cli("export", str(ckpt), "--out", str(tmp_path / "o")), "hidden_act 'mish' is not supported")
    assert not (tmp_path / "o").exists()


def test_config_field_disagreeing_with_tensors_is_rejected(tmp_path):
    """attention_bias without bias tensors: transformers would invent random biases; the toolkit says so."""
    ckpt = save_hf_llama(tmp_path / "c")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["attention_bias"] = True
    (ckpt / "config.json").write_text(json.dumps(cfg))
    assert_one_line_error(cli("export", str(ckpt), "--out", str(tmp_path / "o")), "attention_bias", "q_proj.bias")


def test_fp16_overflow_fails_validation_and_names_the_precision(tmp_path):
    """MLP weights x50: fp16 activations overflow. Validation used to pass on NaN (max(x, nan) keeps x)."""
    ckpt = save_hf_llama(tmp_path / "big", scale_mlp=50)
    proc = cli("export", str(ckpt), "--out", str(tmp_path / "o"))
    assert_clean_failure(proc, "non-finite logits", "--dtype bf16 or --dtype fp32")
    assert not (tmp_path / "o").exists() and _entries(tmp_path) == ["big"]
    ok = cli("export", str(ckpt), "--out", str(tmp_path / "o32"), "--dtype", "fp32", check=True)
    assert "greedy tokens 20/20" in ok.stdout


def test_activations_beyond_fp16_squares_stay_exact(tmp_path):
    """MLP weights x12: |hidden| ~1400, so x^2 overflows fp16 while x does not. The exported RMSNorm divides
    by the row's max first, so an fp16 export still matches transformers."""
    ckpt = save_hf_llama(tmp_path / "mid", scale_mlp=12)
    proc = cli("export", str(ckpt), "--out", str(tmp_path / "o"), check=True)
    assert "greedy tokens 20/20" in proc.stdout


def test_models_sharing_a_directory_name_get_their_own_label_and_artifacts(tmp_path):
    dense = save_hf_llama(tmp_path / "dense" / "ckpt", seed=1)
    pruned = tmp_path / "pruned" / "ckpt"
    cli("prune", str(dense), "--drop-blocks", "1", "--out", str(pruned), check=True)
    out = tmp_path / "r.json"
    cli("bench", str(dense), str(pruned), "--backends", "eager,ort", *FAST, "--work", str(tmp_path / "w"),
        "--out", str(out), check=True)
    res = json.loads(out.read_text())
    assert {m["label"] for m in res["models"]} == {"dense-ckpt", "pruned-ckpt"}
    assert {m["blocks"] for m in res["models"]} == {3, 2}
    assert _entries(tmp_path / "w" / "onnx") == ["dense-ckpt", "pruned-ckpt"]


# -- data loss -------------------------------------------------------------------------------------
def test_metadata_paths_never_become_output_paths(tmp_path, hf):
    """An absolute _name_or_path (common in hub configs) used to send the engine build into that directory."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    ckpt = tmp_path / "ckpt"
    shutil.copytree(hf, ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["_name_or_path"] = str(victim)
    (ckpt / "config.json").write_text(json.dumps(cfg))
    exp = tmp_path / "exp"
    cli("export", str(ckpt), "--out", str(exp), check=True)
    work = tmp_path / "w"
    cli("bench", str(exp), "--backends", "ort,trt", *FAST, "--work", str(work), "--out", str(tmp_path / "r.json"),
        check=True)
    assert _entries(victim) == ["precious.txt"] and (victim / "precious.txt").read_text() == "keep me"
    assert _entries(work / "engines") == ["ckpt"]


def test_force_only_replaces_what_the_toolkit_created(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert_one_line_error(cli("export", "tiny-llama", "--out", str(mine), "--force"), "not created by trtllm-kit")
    without = cli("export", "tiny-llama", "--out", str(mine))  # not "pass --force", which could not help
    assert_one_line_error(without, "not created by trtllm-kit")
    assert "--force" not in without.stderr
    assert _entries(mine) == ["notes.txt"]
    cli("export", "tiny-llama", "--out", str(tmp_path / "e"), check=True)
    cli("export", "tiny-llama-depth", "--out", str(tmp_path / "e"), "--force", check=True)  # its own: replaced
    assert json.loads((tmp_path / "e" / "export.json").read_text())["blocks"] == 4
    (tmp_path / "notes.json").write_text("{}")
    assert_one_line_error(cli("bench", "tiny-llama", "--backends", "eager", *FAST, "--out", str(tmp_path / "notes.json"),
                              "--work", str(tmp_path / "w")), "not written by trtllm-kit")


# -- tracebacks and wrong exits ----------------------------------------------------------------------
def test_truncated_safetensors_is_one_line(tmp_path, hf):
    bad = tmp_path / "trunc"
    shutil.copytree(hf, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert_one_line_error(cli("export", str(bad), "--out", str(tmp_path / "o")), "truncated or corrupt")
    head = tmp_path / "header"
    shutil.copytree(hf, head)
    (head / "model.safetensors").write_bytes(data[:5])
    assert_one_line_error(cli("export", str(head), "--out", str(tmp_path / "o")), "truncated or corrupt")
    assert not (tmp_path / "o").exists()


def test_impossible_out_paths_are_one_line_before_any_work(tmp_path, tiny_exports):
    afile = tmp_path / "file"
    afile.write_text("x")
    under = str(afile / "sub")
    results = tmp_path / "r.json"
    cli("bench", "tiny-llama", "--backends", "eager", *FAST, "--out", str(results), "--work", str(tmp_path / "w"),
        check=True)
    recipe = tmp_path / "rec.yaml"
    recipe.write_text(yaml.safe_dump({"models": ["tiny-llama"], "backends": ["eager"], "out": under,
                                      "sweep": {"batches": [1], "inputs": [4], "outputs": [2]}}))
    for args in (("export", "tiny-llama", "--out", under),
                 ("build", str(tiny_exports["tiny-llama"]), "--out", under),
                 ("bench", "tiny-llama", "--backends", "eager", *FAST, "--out", under + "/r.json"),
                 ("bench", "tiny-llama", "--backends", "ort", *FAST, "--work", under),
                 ("report", str(results), "--out", under),
                 ("run", str(recipe)),
                 ("prune", "tiny-llama", "--drop-blocks", "1", "--out", under)):
        assert_one_line_error(cli(*args), "is a file")
    assert afile.read_text() == "x"


def _in_read_only_mount(tmp_path, *args):
    """Run the CLI with ``tmp_path/ro`` mounted read-only (a private mount namespace; root ignores chmod)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    exe = shutil.which("trtllm-kit")
    cmd = f"mount -t tmpfs -o ro,size=1m tmpfs {ro} && exec {exe} " + " ".join(args)
    return subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True)


@pytest.mark.skipif(not shutil.which("unshare") or os.geteuid() != 0, reason="needs unshare as root")
def test_read_only_out_is_one_line(tmp_path):
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip("mount namespaces are not allowed here")
    ro = tmp_path / "ro"
    for args in (("export", "tiny-llama", "--out", f"{ro}/x"), ("prune", "tiny-llama", "--drop-blocks", "1", "--out",
                                                                f"{ro}/x")):
        proc = _in_read_only_mount(tmp_path, *args)
        assert_one_line_error(proc, "is not writable")
        shutil.rmtree(ro)


@pytest.mark.parametrize("opset", ["18", "21"])
def test_newer_opsets_export_valid_graphs(tmp_path, opset):
    proc = cli("export", "tiny-llama-width", "--out", str(tmp_path / "o"), "--opset", opset, check=True)
    assert "greedy tokens 20/20" in proc.stdout
    import onnx

    model = onnx.load(str(tmp_path / "o" / "model.onnx"))
    assert model.opset_import[0].version == int(opset)


def test_unsupported_opset_is_one_line(tmp_path):
    assert_one_line_error(cli("export", "tiny-llama", "--out", str(tmp_path / "o"), "--opset", "16"), "--opset")


def test_ctrl_c_stops_a_build_exits_130_and_leaves_nothing(tmp_path):
    from trtllm_kit.export import onnx_from_model

    onnx_from_model("small-llama", tmp_path / "exp", validate=False, progress=False)
    out = tmp_path / "made" / "for" / "eng"  # parents the build makes, and removes again (found by a new user)
    proc = subprocess.Popen([shutil.which("trtllm-kit"), "build", str(tmp_path / "exp"), "--out", str(out),
                             "--weights", "inputs"],  # (the weights file is being written beside TensorRT's build)
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "building the engine" in line:
            break
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=60)
    rest = proc.stderr.read()
    assert rc == 130, rest
    assert time.monotonic() - t0 < 10, "the build went on after Ctrl-C"
    assert "interrupted" in rest and "Traceback" not in rest
    assert _entries(tmp_path) == ["exp"]  # no engine directory, no partial directory, no parent made for them


@pytest.mark.parametrize("edit,needle", [
    ({"sweep": {"batches": "1,2"}}, "sweep.batches"),
    ({"engine": {"max_batch": "sixteen"}}, "engine.max_batch"),
    ({"export": {"opset": "seventeen"}}, "export.opset"),
    ({"sweep": {"warmup": "two"}}, "sweep.warmup"),
    ({"sweep": {"repeats": 0}}, "sweep.repeats"),
    ({"dtype": "fp8"}, "dtype"),
    ({"device": "gpu"}, "device"),
    ({"export": {"logits": "first"}}, "export.logits"),
    ({"backends": ["eager", "tensorrt"]}, "backends"),
    ({"models": []}, "models"),
])
def test_recipe_values_are_validated_before_any_work(tmp_path, edit, needle):
    rec = {"models": ["tiny-llama"], "backends": ["eager"], "out": str(tmp_path / "out"),
           "sweep": {"batches": [1], "inputs": [4], "outputs": [2]}}
    for k, v in edit.items():
        rec[k] = {**rec[k], **v} if isinstance(v, dict) and isinstance(rec.get(k), dict) else v
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(rec))
    assert_one_line_error(cli("run", str(path)), needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,needle", [
    (("--repeats", "0"), "--repeats"),
    (("--batch", "0"), "--batch"),
    (("--output", "0"), "--output"),
    (("--batch", "two"), "--batch"),
    (("--device", "gpu"), "--device 'gpu'"),
    (("--device", "cuda"), "no CUDA GPU"),
    (("--dtype", "bf16", "--backends", "ort"), "no bf16 kernels on the CPU"),
    (("--backends", "eager,nope"), "unknown backend 'nope'"),
])
def test_bench_flags_are_validated_before_any_work(tmp_path, args, needle):
    base = {"--batch": "1", "--input": "4", "--output": "2", "--warmup": "0", "--repeats": "1", "--device": "cpu",
            "--backends": "eager"}
    flags = dict(zip(args[::2], args[1::2]))
    argv = [x for k, v in {**base, **flags}.items() for x in (k, v)]
    out = tmp_path / "r.json"
    assert_one_line_error(cli("bench", "tiny-llama", *argv, "--out", str(out), "--work", str(tmp_path / "w")), needle)
    assert not out.exists() and not (tmp_path / "w").exists()


def test_engine_profile_limits_are_reported_without_a_gpu(tmp_path, tiny_exports):
    eng = tmp_path / "eng"
    cli("build", str(tiny_exports["tiny-llama"]), "--out", str(eng), "--max-batch", "2", "--max-input", "8",
        "--max-seq", "16", check=True)
    assert_one_line_error(cli("bench", str(eng), "--backends", "trt", "--batch", "4", "--input", "4", "--output", "2",
                              "--device", "cpu", "--out", str(tmp_path / "r.json")),
                          "batch 4 exceeds the engine's limit 2 (rebuild with --max-batch 4)")


def test_untied_config_without_lm_head_says_it_ties(tmp_path):
    ckpt = save_hf_llama(tmp_path / "c", tie_word_embeddings=True)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (ckpt / "config.json").write_text(json.dumps(cfg))
    proc = cli("export", str(ckpt), "--out", str(tmp_path / "o"), check=True)
    assert "no lm_head.weight; tying the output head to the embeddings" in proc.stderr


def test_artifacts_are_readable_by_other_users(tmp_path, tiny_exports):
    from trtllm_kit.export import onnx_from_model

    res = onnx_from_model("tiny-llama", tmp_path / "e", validate=False, progress=False)
    for f in res.out_dir.iterdir():
        assert f.stat().st_mode & 0o777 == 0o644, f
    assert res.out_dir.stat().st_mode & 0o777 == 0o755


def test_no_tensorrt_message_has_no_double_negative():
    from trtllm_kit.engine import flavors

    proc = subprocess.run(["python", "-c", "import sys; sys.modules['tensorrt_rtx_bindings'] = None; "
                           "sys.modules['tensorrt'] = None; sys.modules['tensorrt_rtx'] = None\n"
                           "from trtllm_kit.engine.flavors import resolve_flavor\n"
                           "from trtllm_kit.errors import ToolkitError\n"
                           "try:\n    resolve_flavor('auto', None)\nexcept ToolkitError as e:\n    print(e)"],
                          capture_output=True, text=True)
    assert "no TensorRT is installed" in proc.stdout and "not installed (install" not in proc.stdout
    assert flavors.INSTALL["tensorrt"] in proc.stdout


# -- found by trying the toolkit as a new user (second round), by kind ---------------------------------
def _patched(src, dst, **cfg):
    shutil.copytree(src, dst)
    data = json.loads((dst / "config.json").read_text())
    data.update(cfg)
    (dst / "config.json").write_text(json.dumps(data))
    return dst


def test_replacing_needs_the_same_kind_and_only_the_toolkits_files(tmp_path, tiny_exports):
    pruned = tmp_path / "pruned"
    cli("prune", "tiny-llama", "--drop-blocks", "0", "--out", str(pruned), check=True)
    res = tmp_path / "r.json"
    cli("bench", "tiny-llama", "--backends", "eager", *FAST, "--out", str(res), "--work", str(tmp_path / "w"),
        check=True)
    assert_one_line_error(cli("report", str(res), "--out", str(pruned)), "holds a trtllm-kit checkpoint, not a report")
    assert (pruned / "config.json").is_file()
    rep = tmp_path / "rep"
    cli("report", str(res), "--out", str(rep), check=True)
    (rep / "my-notes.txt").write_text("mine")
    assert_one_line_error(cli("report", str(res), "--out", str(rep)), "holds my-notes.txt, which trtllm-kit did not write")
    assert (rep / "my-notes.txt").read_text() == "mine"


@pytest.mark.parametrize("cfg,needle", [
    ({"rope_theta": None}, "rope_theta"),
    ({"head_dim": "16"}, "head_dim"),
    ({"num_hidden_layers": "3"}, "num_hidden_layers"),
    ({"rope_scaling": "linear"}, "rope_scaling"),
    ({"rope_scaling": {"type": "linear"}}, "needs factor"),
    ({"tie_word_embeddings": "false"}, "tie_word_embeddings"),
    ({"vocab_size": 32000}, "config.json says vocab_size 32000 but the tensors say 300"),
    ({"intermediate_size": 11008}, "intermediate_size 11008 but the tensors say 128"),
    ({"num_key_value_heads": 4}, "num_key_value_heads 4 but the tensors say 2"),
])
def test_config_values_are_typed_and_agree_with_the_tensors(tmp_path, hf, cfg, needle):
    bad = _patched(hf, tmp_path / "c", **cfg)
    assert_one_line_error(cli("export", str(bad), "--out", str(tmp_path / "o")), needle)
    assert not (tmp_path / "o").exists()


def test_weight_files_that_are_not_what_they_seem(tmp_path, hf):
    from safetensors.torch import load_file, save_file

    stale = tmp_path / "stale"
    shutil.copytree(hf, stale)
    zeros = {k: torch.zeros_like(v) for k, v in load_file(stale / "model.safetensors").items()}
    save_file(zeros, stale / "model_old_backup.safetensors")
    assert_one_line_error(cli("export", str(stale), "--out", str(tmp_path / "o")), "is in both")
    for name, obj in (("int", 5), ("list", {"model.embed_tokens.weight": [1, 2]})):
        b = tmp_path / name
        b.mkdir()
        shutil.copy(hf / "config.json", b)
        torch.save(obj, b / "pytorch_model.bin")
        assert_one_line_error(cli("export", str(b), "--out", str(tmp_path / "o")), "not a")


def test_changed_onnx_and_missing_engine_are_caught(tmp_path, tiny_exports):
    exp = tmp_path / "exp"
    shutil.copytree(tiny_exports["tiny-llama"], exp)
    (exp / "model.onnx").write_bytes(os.urandom(5000))
    assert_one_line_error(cli("build", str(exp), "--out", str(tmp_path / "e")), "changed after the export")
    eng = tmp_path / "eng"
    cli("build", str(tiny_exports["tiny-llama"]), "--out", str(eng), "--max-batch", "2", "--max-input", "8",
        "--max-seq", "16", check=True)
    (eng / "model.engine").unlink()
    assert_one_line_error(cli("inspect", str(eng)), "has no model.engine")
    # an export directory given where an engine belongs: how to make an engine of it, not "build it again"
    assert_one_line_error(cli("inspect", str(tiny_exports["tiny-llama"])), "is not an engine directory",
                          "build one from an export directory with `trtllm-kit build ONNX_DIR`")
    assert_one_line_error(cli("bench", str(eng), "--backends", "trt", *FAST, "--out", str(tmp_path / "r.json")),
                          "has no model.engine")


def test_a_directory_written_meanwhile_is_not_replaced(tmp_path):
    from trtllm_kit.errors import ToolkitError
    from trtllm_kit.utils.fs import atomic_dir

    out = tmp_path / "o"
    with pytest.raises(ToolkitError, match="written by another process meanwhile"):
        with atomic_dir(out, kind="export") as tmp:
            (tmp / "a").write_text("mine")
            out.mkdir()
            (out / "theirs").write_text("theirs")
    assert _entries(out) == ["theirs"] and _entries(tmp_path) == ["o"]


def test_a_directory_that_cannot_be_replaced_is_one_line_and_kept(tmp_path, monkeypatch):
    """--force over a directory the OS will not move (an immutable one: chattr +i) is a ToolkitError naming it, the
    old directory kept as it was and no temporary directory left (a fresh user saw a PermissionError traceback)."""
    from trtllm_kit.errors import ToolkitError
    from trtllm_kit.utils import fs
    from trtllm_kit.utils.fs import atomic_dir

    out = tmp_path / "o"
    with atomic_dir(out, kind="export") as tmp:
        (tmp / "a").write_text("old")
    real = os.replace

    def refuse_moving_out(src, dst):
        if os.fspath(src) == os.fspath(out):
            raise PermissionError(1, "Operation not permitted")
        return real(src, dst)

    monkeypatch.setattr(fs.os, "replace", refuse_moving_out)
    with pytest.raises(ToolkitError, match=r"--out .*/o cannot be replaced: Operation not permitted; nothing was"):
        with atomic_dir(out, force=True, kind="export") as tmp:
            (tmp / "a").write_text("new")
    assert (out / "a").read_text() == "old" and _entries(tmp_path) == ["o"]


def test_sigterm_during_export_leaves_nothing(tmp_path):
    proc = subprocess.Popen([shutil.which("trtllm-kit"), "export", "small-llama", "--out", str(tmp_path / "e")],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.name.startswith(".e.partial") for p in tmp_path.iterdir()):
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert _entries(tmp_path) == [], _entries(tmp_path)


@pytest.mark.parametrize("args,needle", [
    (("tiny-llama", "--out", "{tmp}/results"), "ending in .json"),
    (("tiny-llama", "tiny-llama"), "given twice"),
    (("tiny-llama", "--backends", ""), "no backend given"),
])
def test_bench_arguments_that_look_fine_but_are_not(tmp_path, args, needle):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "r.json")]
    if "--backends" not in argv:
        argv += ["--backends", "eager"]
    flags = ["--batch", "1", "--input", "4", "--output", "2", "--warmup", "0", "--repeats", "1", "--device", "cpu",
             "--work", str(tmp_path / "w")]
    assert_one_line_error(cli("bench", *argv, *flags), needle)


def test_export_dtype_is_followed_and_conflicts_refused(tmp_path):
    exp = tmp_path / "e32"
    cli("export", "tiny-llama", "--dtype", "fp32", "--out", str(exp), check=True)
    out = tmp_path / "r.json"
    cli("bench", str(exp), "--backends", "ort", *FAST, "--out", str(out), "--work", str(tmp_path / "w"), check=True)
    assert json.loads(out.read_text())["dtype"] == "fp32"
    assert_one_line_error(cli("bench", str(exp), "--backends", "ort", *FAST, "--dtype", "fp16", "--out",
                              str(tmp_path / "r2.json")), "is a fp32 export/engine but the run asks for --dtype fp16")


def test_recipe_name_cannot_escape_and_seed_needs_a_preset(tmp_path, hf):
    rec = tmp_path / "r.yaml"
    rec.write_text(yaml.safe_dump({"name": "../../escape", "models": ["tiny-llama"], "backends": ["eager"]}))
    assert_one_line_error(cli("run", str(rec)), "name")
    assert_one_line_error(cli("export", str(hf), "--seed", "5", "--out", str(tmp_path / "o")), "--seed only applies")


def test_labels_keep_their_script_and_long_names_stay_apart():
    from trtllm_kit.utils.fs import safe_component

    assert safe_component("модель") == "модель" and safe_component("模型") == "模型"
    a, b = safe_component("x" * 150 + "a"), safe_component("x" * 150 + "b")
    assert a != b and len(a) <= 100
