"""The builder, for real: TensorRT-RTX builds engines on this CPU-only machine."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import TINY, assert_one_line_error, cli, emulate_kv_update
from trtllm_kit.engine.builder import engine_from_onnx
from trtllm_kit.engine.kv_layouts import new_rows_onnx, static_cache_onnx
from trtllm_kit.engine.limits import EngineLimits, select_profile
from trtllm_kit.engine.manifest import BuildOptions, EngineManifest
from trtllm_kit.errors import ProfileError, ToolkitError
from trtllm_kit.export.validate import left_padded_prompts, positions_from_mask
from trtllm_kit.models import load_model
from trtllm_kit.models.reference import reference_from_weights

pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX is part of the default install")
SMALL = EngineLimits(max_batch=8, max_input=32, max_seq=96)


def opts(**kw) -> BuildOptions:
    return BuildOptions(limits=kw.pop("limits", SMALL), **kw)


@pytest.fixture(scope="module")
def engines(tiny_exports, tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    return {(name, mode): engine_from_onnx(tiny_exports[name], root / f"{name}-{mode}", opts(kv_mode=mode),
                                           progress=False)
            for name in TINY for mode in ("portable", "portable-static", "inplace")}


@pytest.mark.parametrize("mode", ["portable", "portable-static", "inplace"])
@pytest.mark.parametrize("name", TINY)
def test_engine_builds_and_metadata_matches_its_io(engines, name, mode):
    res = engines[(name, mode)]
    meta = json.loads((res.out_dir / "engine.json").read_text())  # readable without the toolkit
    assert EngineManifest.load(res.out_dir) == res.manifest
    plan = res.engine_path.read_bytes()
    assert len(plan) == meta["engine_bytes"] > 100_000
    assert meta["flavor"] == "tensorrt-rtx" and meta["kv_layout"]["name"] == mode
    assert meta["built_without_gpu"] and meta["gpu"] is None
    assert set(meta["build_phases"]) >= {"parsing ONNX", "building the engine (TensorRT)"}
    spec, _ = load_model(name)
    io = {t["name"]: t for t in meta["io"]}
    n_io = 3 + 2 * spec.num_layers + (1 if mode == "inplace" else 0)
    assert sum(t["mode"] == "input" for t in meta["io"]) == n_io
    assert sum(t["mode"] == "output" for t in meta["io"]) == 1 + 2 * spec.num_layers
    for i, layer in enumerate(spec.layers):
        k = io[f"past_key_values.{i}.key"]
        assert k["dtype"] == "half" and k["shape"][1] == layer.n_kv_heads and k["shape"][3] == layer.head_dim
        assert io[f"present.{i}.value"]["shape"][1] == layer.n_kv_heads
        if mode == "inplace":  # static cache length, aliased in and out
            assert k["shape"][2] == SMALL.max_seq and io[f"present.{i}.key"]["shape"][2] == SMALL.max_seq
        if mode == "portable-static":  # the new rows only, in the cache's type
            assert io[f"present.{i}.key"]["shape"][2] == -1 and io[f"present.{i}.key"]["dtype"] == "half"
    if mode == "inplace":
        assert io["write_indices"]["dtype"] == "int32" and io["attention_mask"]["shape"] == [-1, SMALL.max_seq]
    # every profile's per-tensor shapes are consistent: mask length = past + new tokens
    for p in meta["profiles"]:
        for bound in ("min", "opt", "max"):
            t = p["tensors"]
            if mode != "inplace":
                assert t["attention_mask"][bound][1] == t["input_ids"][bound][1] + t["past_key_values.0.key"][bound][2]
    assert meta["source"]["onnx_sha256"] and meta["spec"]["name"] == name


def test_weights_as_inputs_leave_the_plan_with_their_onnx_names_and_values(tiny_exports, tmp_path):
    """``--weights inputs``: every weight matrix becomes an engine input named as in the ONNX file, stored in
    weights.safetensors with the export's exact values (what a server binds), and nothing else moves."""
    from safetensors.numpy import load_file

    from trtllm_kit.engine.inspect import describe_engine

    name = "tiny-llama-width"  # uneven blocks: every layer its own shapes
    res = engine_from_onnx(tiny_exports[name], tmp_path / "w", opts(weights="inputs", kv_mode="portable"), progress=False)
    m = res.manifest
    model = onnx.load(tiny_exports[name] / "model.onnx")
    want = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer
            if i.name.endswith(".weight") and len(i.dims) >= 2}
    stored = load_file(str(res.out_dir / m.weight_inputs.file))
    assert set(stored) == set(want) == set(m.weight_inputs.tensors) and len(want) == 7 * 6 + 2
    for k, v in want.items():
        assert stored[k].dtype == np.float16 and np.array_equal(stored[k], v), k
    inputs = {t.name: t for t in m.io if t.mode == "input"}
    assert all(inputs[k].shape == list(v.shape) and inputs[k].dtype == "half" for k, v in want.items())
    assert len(inputs) == len(want) + 3 + 2 * 6  # ids, positions, mask, the cache: unchanged
    embedded = engine_from_onnx(tiny_exports[name], tmp_path / "e", opts(kv_mode="portable"), progress=False).manifest
    assert embedded.weight_inputs is None and not (tmp_path / "e" / "weights.safetensors").exists()
    assert m.engine_bytes < embedded.engine_bytes - 100_000  # the values left the plan (RTX: 10.89 vs 11.09 MB)
    assert "44 tensors as engine inputs in weights.safetensors" in describe_engine(res.out_dir)
    assert "model.layers.0.mlp.up_proj.weight" not in describe_engine(res.out_dir)  # listed once, not 44 rows

    # A damaged weights file is one clear line before anything runs (found by trying it as a new user).
    from trtllm_kit.engine.weights import WeightInputsRecord, load_weight_inputs

    wfile = res.out_dir / "weights.safetensors"
    good = wfile.read_bytes()
    wfile.write_bytes(good[:1000])
    with pytest.raises(ToolkitError, match="is 1000 bytes, engine.json says"):
        describe_engine(res.out_dir)
    wfile.write_bytes(b"\xff" * 16 + good[16:])  # same size, unreadable header
    with pytest.raises(ToolkitError, match="not a readable safetensors file"):
        load_weight_inputs(res.out_dir, m.weight_inputs, engine=None, device="cpu")
    with pytest.raises(ValueError, match="not a file name inside the engine directory"):
        WeightInputsRecord(file="../../etc/passwd", sha256="0", bytes=1, tensors={})


def test_weight_inputs_are_what_the_network_reads(tiny_exports):
    """After the rewrite every weight input has readers and no layer reads a weight constant any more (an
    earlier rewrite looked readers up by the renamed tensor: the inputs dangled and the engine kept using its
    constants, which token tests cannot see)."""
    from trtllm_kit.engine.builder import _create_network
    from trtllm_kit.engine.flavors import resolve_flavor
    from trtllm_kit.engine.kv_layouts import NetworkIndex
    from trtllm_kit.engine.weights import weights_to_inputs

    flavor = resolve_flavor("auto", None)
    trt = flavor.trt
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = _create_network(flavor, builder)
    parser = trt.OnnxParser(network, logger)
    path = tiny_exports["tiny-llama-width"] / "model.onnx"
    assert parser.parse_from_file(str(path))
    arrays = weights_to_inputs(trt, network, path)
    index = NetworkIndex(network)
    assert len(arrays) == 44 and all(index.consumers.get(name) for name in arrays)
    stale = [n for n in index.consumers if n.endswith(".constant")]
    assert not stale, stale


def test_profiles_cover_the_sweep_and_reject_points_beyond(engines):
    m = engines[("tiny-llama", "portable")].manifest
    profiles = m.profile_specs()
    assert [p.name for p in profiles] == ["prefill", "decode"]
    assert select_profile(profiles, 8, 32, 0) == 0 and select_profile(profiles, 1, 1, 95) == 1
    with pytest.raises(ProfileError):
        select_profile(profiles, 9, 1, 10)
    with pytest.raises(ProfileError, match="--max-batch 9"):
        m.limits.check_point(9, 1, 10)
    with pytest.raises(ProfileError, match="--max-seq 97"):
        m.limits.check_point(1, 1, 96)
    with pytest.raises(ProfileError, match="--max-input 33"):
        m.limits.check_point(1, 33, 1)


def test_timing_cache_is_reported_as_ignored_by_rtx(tiny_exports, tmp_path):
    cache = tmp_path / "timing.cache"
    res = engine_from_onnx(tiny_exports["tiny-llama"], tmp_path / "a", opts(timing_cache=str(cache)), progress=False)
    assert res.manifest.timing_cache_note.startswith("ignored: TensorRT-RTX") and not cache.exists()


def test_single_profile_layout(tiny_exports, tmp_path):
    res = engine_from_onnx(tiny_exports["tiny-llama-depth"], tmp_path / "s", opts(profiles="single", kv_mode="portable"),
                           progress=False)
    assert [p.name for p in res.manifest.profiles] == ["all"]


def test_bad_build_inputs_are_one_line_errors(tiny_exports, tmp_path):
    onnx_dir = str(tiny_exports["tiny-llama"])
    cases = [
        ((str(tmp_path / "missing"),), "does not exist"),
        ((onnx_dir, "--max-input", "64", "--max-seq", "32"), "--max-seq 32 must exceed --max-input 64"),
        ((onnx_dir, "--max-batch", "0"), "--max-batch': 0 is not in the range"),
        ((onnx_dir, "--opt-batch", "500"), "--opt-batch 500 lies outside"),
        ((onnx_dir, "--flavor", "tensorrt"), "TensorRT is not installed"),
        ((onnx_dir, "--kv-mode", "plugin"), "--kv-mode plugin: tensorrt-rtx"),
        ((onnx_dir, "--gemm", "plugin"), "--gemm plugin: it reads the weight matrices as engine inputs"),
        ((onnx_dir, "--gemm", "plugin", "--weights", "inputs"),  # auto may choose plugin (8.6); here it chose inplace
         "not with --kv-mode inplace (--kv-mode auto chose the inplace layout here)"),
        ((onnx_dir, "--gemm", "plugin", "--kv-mode", "plugin"), "--gemm plugin: it reads the weight matrices as engine inputs"),
        ((onnx_dir, "--norm", "plugin"), "--norm plugin: it ships in the toolkit's plugin library (--kv-mode plugin, "
         "portable or portable-static), not with --kv-mode inplace (--kv-mode auto chose the inplace layout here)"),
        ((onnx_dir, "--gemm", "plugin", "--kv-mode", "portable", "--weights", "inputs"),
         "--gemm plugin: it ships in the toolkit's plugin library (--kv-mode plugin or portable-static), not with "
         "--kv-mode portable"),
        ((onnx_dir, "--gemm", "plugin", "--kv-mode", "portable-static", "--weights", "inputs"),  # allowed there
         "--gemm plugin: tensorrt-rtx"),
        ((onnx_dir, "--norm", "plugin", "--kv-mode", "portable"),  # allowed there, where the library loads
         "--norm plugin: tensorrt-rtx"),
        ((onnx_dir, "--norm", "plugin", "--kv-mode", "portable-static"), "--norm plugin: tensorrt-rtx"),
        ((onnx_dir, "--rope", "plugin", "--kv-mode", "portable-static"), "--rope plugin: tensorrt-rtx"),
        ((onnx_dir, "--rope", "plugin", "--kv-mode", "portable"),
         "--rope plugin: it feeds the attention of --kv-mode plugin or portable-static, not --kv-mode portable"),
        ((onnx_dir, "--trt-include", str(tmp_path / "no-headers")), "'--trt-include': Directory"),
        ((str(tmp_path / "new\nline"),), "new\\nline does not exist"),  # a newline in a value stays one line
        ((onnx_dir, "--max-seq", "4096"), "exceeds the model's max_position_embeddings 2048"),
        ((str(tmp_path),), "not an export directory"),
    ]
    for args, needle in cases:
        out = tmp_path / "eng"
        assert_one_line_error(cli("build", *args, "--out", str(out)), needle)
        assert not out.exists()
    # where the flavour cannot use the plugin library at all (TensorRT-RTX), the fix offered is not a layout
    for option in ("norm", "rope"):
        proc = cli("build", onnx_dir, f"--{option}", "plugin", "--out", str(tmp_path / "eng"))
        assert_one_line_error(proc, f"use --{option} auto or trt: the toolkit's plugin library cannot be used here")
        assert "--kv-mode plugin, or" not in proc.stderr and "use --kv-mode" not in proc.stderr
    # also where the options conflict anyway: the fix offered is the one that works here, for every plugin asked
    for args, fix in ((("--kv-mode", "portable", "--rope", "plugin"), "use --rope auto or trt: the toolkit's plugin "
                       "library cannot be used here"),
                      (("--kv-mode", "portable-static", "--norm", "plugin", "--rope", "plugin", "--gemm", "plugin"),
                       "use --gemm, --norm and --rope auto or trt: the toolkit's plugin library cannot be used here")):
        proc = cli("build", onnx_dir, *args, "--out", str(tmp_path / "eng"))
        assert_one_line_error(proc, fix)
        assert "use --kv-mode" not in proc.stderr and not (tmp_path / "eng").exists()
    proc = cli("build", onnx_dir, "--flavor", "nope")
    assert proc.returncode != 0 and "nope" in proc.stderr
    # an option that can never work is named before anything else is looked at: not "pass --force" for an
    # existing --out, nor "TensorRT is not installed" for --flavor tensorrt
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    for extra in (("--out", str(existing)), ("--flavor", "tensorrt", "--out", str(tmp_path / "e2"))):
        assert_one_line_error(cli("build", onnx_dir, "--norm", "plugin", "--kv-mode", "inplace", *extra),
                              "--norm plugin: it ships in the toolkit's plugin library", "--kv-mode inplace")
    assert (existing / "keep.txt").read_text() == "mine" and not (tmp_path / "e2").exists()


def test_build_says_which_rmsnorm_it_uses(tiny_exports, tmp_path):
    proc = cli("build", str(tiny_exports["tiny-llama"]), "--out", str(tmp_path / "e"), "--kv-mode", "portable")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "RMSNorm: the exported ops (--norm auto; the plugin comes with --kv-mode plugin)" in proc.stderr


def test_failed_build_leaves_no_directory_and_reports_tensorrt_errors(tiny_exports, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_exports["tiny-llama"], broken)
    model = onnx.load(str(broken / "model.onnx"))
    model.graph.node[5].op_type = "NoSuchOp"  # a graph TensorRT cannot parse
    onnx.save(model, str(broken / "model.onnx"))
    with pytest.raises(ToolkitError, match="changed after the export"):  # the manifest notices first
        engine_from_onnx(broken, tmp_path / "e", opts(), progress=False)
    from trtllm_kit.export.manifest import ExportManifest
    from trtllm_kit.utils.fs import sha256_file

    m = ExportManifest.load(broken)  # as if the exporter itself had written an unparsable graph
    m.model_copy(update={"onnx_sha256": sha256_file(broken / "model.onnx")}).save(broken)
    with pytest.raises(ToolkitError, match="TensorRT could not parse"):
        engine_from_onnx(broken, tmp_path / "e", opts(), progress=False)
    assert not (tmp_path / "e").exists()


def test_rtx_is_refused_on_hopper_before_any_work(tiny_exports, tmp_path):
    from trtllm_kit.engine.flavors import GpuInfo

    with pytest.raises(ToolkitError, match=r"cannot build for NVIDIA H100.*9\.0.*--flavor tensorrt"):
        engine_from_onnx(tiny_exports["tiny-llama"], tmp_path / "h", opts(flavor="tensorrt-rtx"),
                         gpu=GpuInfo("NVIDIA H100 80GB HBM3", (9, 0)), progress=False)
    assert not (tmp_path / "h").exists()


def test_bench_refuses_a_kv_mode_that_a_given_engine_was_not_built_with(engines, tmp_path):
    """An engine directory is timed as it was built: ``bench ENGINE --kv-mode portable`` on an inplace engine is one
    line before any work, not a silent inplace timing."""
    eng = engines[("tiny-llama", "inplace")].out_dir
    out = tmp_path / "r.json"
    assert_one_line_error(cli("bench", str(eng), "--backends", "trt", "--kv-mode", "portable", "--work",
                              str(tmp_path / "w"), "--out", str(out)),
                          f"--kv-mode portable: {eng} is an engine built with the inplace layout")
    assert not out.exists() and not (tmp_path / "w").exists()
    # beside a model it builds for, --kv-mode applies to that one, and the given engine is timed as built (said)
    mixed = cli("bench", str(eng), "tiny-llama", "--backends", "trt", "--kv-mode", "portable", "--batch", "1",
                "--input", "4", "--output", "2", "--warmup", "0", "--repeats", "1", "--work", str(tmp_path / "w"),
                "--out", str(out))
    assert "built with the inplace layout: timed as it is (--kv-mode portable applies" in mixed.stderr


def test_inspect_prints_the_engine(engines):
    eng = engines[("tiny-llama-width", "inplace")].out_dir
    for inside in ("model.engine", "engine.json"):
        assert_one_line_error(cli("inspect", str(eng / inside)), f"{inside} is a file of an engine directory",
                              f"use {eng}")
    out = cli("inspect", str(eng), check=True).stdout
    assert "tensorrt-rtx" in out and "inplace" in out and "write_indices" in out and "prefill" in out
    assert "no GPU (a TensorRT-RTX engine runs on" in out
    assert "gemm        TensorRT's matrix multiply layers" in out
    assert "norm        the exported RMSNorm ops (TensorRT layers)" in out
    assert "rope        the exported rotary ops (TensorRT layers)" in out
    layers = cli("inspect", str(engines[("tiny-llama-width", "inplace")].out_dir), "--layers", check=True).stdout
    assert "layers: not available (not through Polygraphy: it is a TensorRT-RTX engine" in layers  # says why


def test_inplace_graph_rewrite_matches_reference(tiny_exports):
    """The in-place rewrite (static caches, write_indices, causal mask from write position) computes the
    same logits as the PyTorch reference through prefill and decode, with left padding."""
    name, max_seq, batch, plen = "tiny-llama-width", 24, 3, 7
    spec, weights = load_model(name)
    ref = reference_from_weights(spec, weights)
    model = emulate_kv_update(static_cache_onnx(tiny_exports[name] / "model.onnx", max_seq))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids, mask = left_padded_prompts(spec, batch, plen, seed=11)
    pos = positions_from_mask(mask)
    cache = {f"past_key_values.{i}.{kv}": np.zeros((batch, L.n_kv_heads, max_seq, L.head_dim), np.float16)
             for i, L in enumerate(spec.layers) for kv in ("key", "value")}
    full_mask = np.zeros((batch, max_seq), np.int64)
    full_mask[:, :plen] = mask.numpy()
    written, past, ref_mask = 0, None, mask
    names = [o.name for o in sess.get_outputs()]
    for step in range(4):
        feeds = {"input_ids": ids.numpy(), "position_ids": pos.numpy(), "attention_mask": full_mask,
                 "write_indices": np.full((batch,), written, np.int32), **cache}
        outs = dict(zip(names, sess.run(names, feeds)))
        with torch.no_grad():
            want, past = ref(ids, pos, ref_mask, past, last_only=True)
        np.testing.assert_allclose(outs["logits"].astype(np.float32), want.numpy(), atol=3e-2 * want.abs().max().item())
        cache = {k.replace("present.", "past_key_values."): v for k, v in outs.items() if k.startswith("present.")}
        written += ids.shape[1]
        ids = want[:, -1].argmax(-1, keepdim=True)
        full_mask[:, written] = 1
        ref_mask = torch.cat((ref_mask, torch.ones(batch, 1, dtype=torch.long)), 1)
        pos = pos[:, -1:] + 1


def test_bf16_export_builds_and_says_why_it_was_not_validated(tmp_path):
    from trtllm_kit.export import onnx_from_model

    res = onnx_from_model("tiny-llama-width", tmp_path / "bf16", dtype="bf16", progress=False)
    assert "no bf16 kernels on the CPU" in res.manifest.validation_skipped
    eng = engine_from_onnx(res.out_dir, tmp_path / "e", opts(), progress=False)
    assert {t.dtype for t in eng.manifest.io if t.name.startswith("past")} == {"bf16"}
    # --weights inputs cannot store bf16 (numpy): refused before the ONNX file is parsed, nothing written
    assert_one_line_error(cli("build", str(res.out_dir), "--weights", "inputs", "--out", str(tmp_path / "w")),
                          "--weights inputs cannot store a bf16 export's weights", "--weights engine")
    assert not (tmp_path / "w").exists()


def test_trt_runner_rejects_points_beyond_the_profile_and_needs_a_gpu(engines):
    from trtllm_kit.runtime.trt import TrtRunner

    runner = TrtRunner(engines[("tiny-llama", "inplace")].out_dir)
    runner.check_point(8, 12, 32)
    with pytest.raises(ProfileError, match=r"batch 9 exceeds the engine's limit 8 \(rebuild with --max-batch 9\)"):
        runner.check_point(9, 12, 32)
    with pytest.raises(ProfileError, match="--max-seq 112"):
        runner.check_point(1, 32, 80)
    with pytest.raises(ProfileError, match="--max-input 33"):
        runner.check_point(1, 33, 8)
    with pytest.raises(ToolkitError, match="need a CUDA GPU"):
        runner.activate()


@pytest.mark.parametrize("name", ["tiny-llama-width", "tiny-llama"])
def test_plugin_rewrite_finds_every_anchor_in_the_parsed_network(tiny_exports, name):
    """The plugin layout rewires each layer at the exporter's anchor tensors; TensorRT's parser must keep
    them, with each layer's own heads and head dim (checked with TensorRT-RTX's parser on the CPU; the
    rewrite itself, which needs the compiled plugin, runs on the GPU machine)."""
    import tensorrt_rtx_bindings as trt

    from trtllm_kit.engine.kv_layouts import NetworkIndex
    from trtllm_kit.export.io_spec import Anchors

    spec, _ = load_model(name)
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    onnx_path = tiny_exports[name] / "model.onnx"
    assert parser.parse(static_cache_onnx(onnx_path, 24), str(onnx_path))
    index = NetworkIndex(network)
    tensors, inputs, outputs = index.tensors, index.inputs, index.outputs
    for i, L in enumerate(spec.layers):
        q, k, v, attn = (tensors[n] for n in (Anchors.q(i), Anchors.k_new(i), Anchors.v_new(i), Anchors.attn(i)))
        assert q.shape[1] == L.n_heads and attn.shape[1] == L.n_heads and q.shape[3] == L.head_dim
        assert k.shape[1] == v.shape[1] == L.n_kv_heads
        assert tuple(inputs[f"past_key_values.{i}.key"].shape)[1:] == (L.n_kv_heads, 24, L.head_dim)
        assert f"present.{i}.value" in outputs
    # the type the 8.6 rewrites pin plugins to: the caches' (not the network's type of a norm's input, which
    # TensorRT 8.6 said was float for an fp16 export: the plugins ran in float between reformats)
    from trtllm_kit.engine.kv_layouts import NetworkContext

    from trtllm_kit.export.manifest import ExportManifest

    want = {"fp16": trt.float16, "fp32": trt.float32, "bf16": trt.bfloat16}[ExportManifest.load(tiny_exports[name]).dtype]
    assert NetworkContext(trt, network, spec, None, None, None).act_dtype == want


@pytest.mark.parametrize("name", ["tiny-llama-width", "tiny-llama"])
def test_gemm_rewrite_finds_every_projection_and_lm_head(tiny_exports, name):
    """``--gemm plugin`` replaces each multiply by a weight input; the search (``matmuls_by_weight``) must find
    all 7 projections of every layer and the lm_head, each with its own (K, N), on a real parser's network
    (TensorRT-RTX on the CPU; the rewrite with the compiled plugin runs on the GPU machine)."""
    import tensorrt_rtx_bindings as trt

    from trtllm_kit.engine.gemm import matmuls_by_weight
    from trtllm_kit.engine.kv_layouts import NetworkIndex
    from trtllm_kit.engine.weights import weights_to_inputs

    spec, _ = load_model(name)
    logger = trt.Logger(trt.Logger.ERROR)
    network = trt.Builder(logger).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    onnx_path = tiny_exports[name] / "model.onnx"
    assert trt.OnnxParser(network, logger).parse(static_cache_onnx(onnx_path, 24), str(onnx_path))
    arrays = weights_to_inputs(trt, network, onnx_path)
    found = matmuls_by_weight(trt, network, set(arrays))
    names = sorted(w.name for _, w, _ in found)
    projections = [f"model.layers.{i}.{p}.weight" for i in range(spec.num_layers)
                   for p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    head = [] if spec.tie_word_embeddings else ["lm_head.weight"]
    assert names == sorted(projections + head)
    for layer, w, w_layout in found:
        assert w_layout == 0
        assert layer.get_input(0).shape[-1] == w.shape[0] and layer.get_output(0).shape[-1] == w.shape[1], layer.name
        assert tuple(w.shape) == arrays[w.name].shape
    index = NetworkIndex(network)
    assert "logits" in index.outputs and (not head or any(
        layer.get_output(0).name == "logits" for layer, _, _ in found))
    assert matmuls_by_weight(trt, network, set()) == []  # only the named inputs count


def test_gemm_rewire_follows_chained_multiplies(monkeypatch):
    """x @ A @ B with both weights as inputs: the second replacement must read the first replacement's output
    (not the dead original), and the network output moves to the last one. The plugin layer is stood in for by
    a MatrixMultiply (the plugin needs nvcc and full TensorRT; the rewiring is what is tested)."""
    import tensorrt_rtx_bindings as trt

    from trtllm_kit.engine import plugin as P
    from trtllm_kit.engine.gemm import rewire_gemms
    from trtllm_kit.engine.kv_layouts import NetworkContext, NetworkIndex

    def stand_in(trt_module, network, x, w, name, w_layout=0):
        layer = network.add_matrix_multiply(x, trt.MatrixOperation.NONE, w, trt.MatrixOperation.NONE)
        layer.name = name
        return layer

    monkeypatch.setattr(P, "add_gemm", stand_in)
    logger = trt.Logger(trt.Logger.ERROR)
    network = trt.Builder(logger).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    x = network.add_input("x", trt.float16, (2, 8))
    a = network.add_input("a.weight", trt.float16, (8, 4))
    b = network.add_input("b.weight", trt.float16, (4, 3))
    m1 = network.add_matrix_multiply(x, trt.MatrixOperation.NONE, a, trt.MatrixOperation.NONE)
    m1.name = "m1"
    m2 = network.add_matrix_multiply(m1.get_output(0), trt.MatrixOperation.NONE, b, trt.MatrixOperation.NONE)
    m2.name = "m2"
    m2.get_output(0).name = "y"
    network.mark_output(m2.get_output(0))
    ctx = NetworkContext(trt, network, None, None, None, None, strongly_typed=True, gemm="plugin")
    assert rewire_gemms(ctx, {"a.weight", "b.weight"}) == 2
    index = NetworkIndex(network)
    last = index.producers[index.outputs["y"].name]
    first = index.producers[last.get_input(0).name]
    assert last.name == "gemm.m2" and first.name == "gemm.m1" and first.get_input(0).name == "x"


def test_reuse_compares_the_gemm_the_engine_used(engines):
    """An engine is reused only if a build now would use the same multiplies: engines from before the GEMM plugin
    (no choice recorded) read as TensorRT's layers, and --gemm auto is resolved for the engine's layout."""
    from trtllm_kit.engine import plugin as P
    from trtllm_kit.engine.manifest import PLUGIN_REWRITE, PluginRecord

    m = engines[("tiny-llama", "inplace")].manifest
    same = (m.flavor, m.trt_version, m.source.onnx_sha256, m.source.weights_sha256)
    assert m.gemm_used == "trt" and m.answers(m.build, *same) and m.kv_layout.rewrite == PLUGIN_REWRITE
    record = PluginRecord(file="lib.so", sha256="0" * 64, source_sha256=P.source_sha256(gemm=True), name="A",
                          version="1", gemm="TrtllmKitGemm", links=["/x/libcublasLt.so.13"])
    with_gemm = m.model_copy(update={"kv_layout": m.kv_layout.model_copy(update={"plugin": record})})
    assert with_gemm.gemm_used == "plugin" and not with_gemm.answers(m.build, *same)  # auto -> trt for inplace
    assert with_gemm.differences(m.build, *same) == ["gemm plugin -> trt"]  # what the rebuild log says
    # an explicit --norm trt or --gemm trt where auto resolves to the same: the same engine, reused
    assert m.answers(m.build.model_copy(update={"norm": "trt", "gemm": "trt"}), *same)
    assert m.differences(m.build.model_copy(update={"kv_mode": "portable"}), *same) == ["kv_mode inplace -> portable"]
    assert m.differences(m.build, m.flavor, m.trt_version, "0" * 64, m.source.weights_sha256) == ["the export changed"]
    from dataclasses import replace

    larger = replace(m.build.limits, max_batch=m.build.limits.max_batch * 2)
    assert m.differences(m.build.model_copy(update={"limits": larger}), *same) == [
        f"limits.max_batch {m.build.limits.max_batch} -> {larger.max_batch}"]
    # a plugin-layout engine: its norm choice against what --norm asks now (auto means the plugin there)
    plugin_layout = m.kv_layout.model_copy(update={"name": "plugin", "plugin": record.model_copy(
        update={"gemm": None, "links": [], "norm": "TrtllmKitRMSNorm", "rope": "TrtllmKitRotary",
                "source_sha256": P.source_sha256()})})
    with_norm = m.model_copy(update={"kv_layout": plugin_layout})
    asked = m.build.model_copy(update={"kv_mode": "plugin"})
    plugin_same = (with_norm.flavor, with_norm.trt_version, *same[2:])
    with_norm = with_norm.model_copy(update={"build": asked})
    assert with_norm.differences(asked.model_copy(update={"norm": "auto", "gemm": "trt"}), *plugin_same) == []
    assert with_norm.differences(asked.model_copy(update={"norm": "trt", "gemm": "trt"}), *plugin_same) == [
        "norm plugin -> trt"]
    old = with_norm.model_copy(update={"kv_layout": plugin_layout.model_copy(
        update={"plugin": plugin_layout.plugin.model_copy(update={"norm": None})})})  # from before the norm plugin
    assert old.differences(asked.model_copy(update={"norm": "auto", "gemm": "trt"}), *plugin_same) == [
        "norm trt -> plugin"]
    assert with_norm.differences(asked.model_copy(update={"rope": "trt", "gemm": "trt"}), *plugin_same) == [
        "rope plugin -> trt"]
    # the same choices from other plugin code, or from the rewrite before the plugins' type pins (2026-11-30)
    stale = with_norm.model_copy(update={"kv_layout": plugin_layout.model_copy(
        update={"rewrite": 1, "plugin": plugin_layout.plugin.model_copy(update={"source_sha256": "0" * 64})})})
    assert stale.differences(asked.model_copy(update={"gemm": "trt"}), *plugin_same) == [
        "the plugin sources changed", f"plugin rewrite 1 -> {PLUGIN_REWRITE}"]
    # a portable engine with the norm plugin (no attention plugin in its record): reused for --norm plugin only
    portable = m.model_copy(update={"build": m.build.model_copy(update={"kv_mode": "portable", "norm": "plugin"}),
                                    "kv_layout": m.kv_layout.model_copy(update={"name": "portable", "plugin": PluginRecord(
                                        file="lib.so", sha256="0" * 64, source_sha256=P.source_sha256(), norm=P.NORM_NAME)})})
    assert portable.differences(portable.build, *same) == []
    assert portable.differences(portable.build.model_copy(update={"norm": "auto"}), *same) == ["norm plugin -> trt"]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-width"])
def test_norm_rewrite_finds_each_norms_input_and_rewires_its_readers(tiny_exports, name, monkeypatch):
    """--norm plugin: every RMSNorm's input is read off the exported graph, and the norm's readers (q/k/v and
    gate/up multiplies, the lm_head) move to the new layer. The plugin layer is stood in for by an Identity
    (the plugin needs nvcc and full TensorRT; the search and the rewiring are what is tested)."""
    import tensorrt_rtx_bindings as trt

    from trtllm_kit.engine import plugin as P
    from trtllm_kit.engine.kv_layouts import NetworkContext, NetworkIndex, rewire_norms, rms_norm_inputs
    from trtllm_kit.export.io_spec import Anchors

    seen = {}

    def stand_in(trt_module, network, x, w, eps, name):
        seen[name] = (x.name, tuple(w.shape), eps)
        layer = network.add_identity(x)
        layer.name = name
        return layer

    monkeypatch.setattr(P, "add_rms_norm", stand_in)
    spec, _ = load_model(name)
    onnx_path = tiny_exports[name] / "model.onnx"
    inputs = rms_norm_inputs(onnx_path, Anchors.norms(spec.num_layers))
    assert inputs[Anchors.input_norm(0)] == "embeddings"
    for i in range(spec.num_layers):
        assert inputs[Anchors.mlp_norm(i)] == Anchors.attn_res(i)
        if i:
            assert inputs[Anchors.input_norm(i)] == Anchors.mlp_res(i - 1)
    logger = trt.Logger(trt.Logger.ERROR)
    network = trt.Builder(logger).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(network, logger).parse(static_cache_onnx(onnx_path, 24), str(onnx_path))
    before = NetworkIndex(network)
    readers = {a: [(layer.name, j) for layer, j in before.consumers[a]] for a in inputs}
    ctx = NetworkContext(trt, network, spec, None, None, None, strongly_typed=True, norm="plugin")
    assert rewire_norms(ctx, inputs) == 2 * spec.num_layers + 1
    after = NetworkIndex(network)
    for anchor, x in inputs.items():
        new = f"rms_norm.{anchor}"
        assert seen[new][0] == x and seen[new][2] == spec.rms_norm_eps
        assert seen[new][1][-1] == spec.hidden_size  # the exported Mul's scale, H wide
        for layer_name, j in readers[anchor]:
            layer = next(after.network.get_layer(k) for k in range(network.num_layers)
                         if network.get_layer(k).name == layer_name)
            assert after.producers[layer.get_input(j).name].name == new, (anchor, layer_name)
    with pytest.raises(ToolkitError, match="not an RMSNorm as this version's exporter writes it"):
        rms_norm_inputs(onnx_path, [Anchors.q(0)])


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-width"])
def test_rope_rewrite_reads_each_blocks_rotary_off_the_export(tiny_exports, name, monkeypatch):
    """--rope plugin: each block's q/k projections and cos/sin are read off the exported graph, and the plugin
    gets each block's own heads and head_dim (width-pruned blocks differ). The plugin layer is stood in for by
    Identity layers (the plugin needs nvcc and full TensorRT); the search and the wiring are what is tested."""
    import onnx
    import tensorrt_rtx_bindings as trt

    from trtllm_kit.engine import plugin as P
    from trtllm_kit.engine.kv_layouts import NetworkContext, NetworkIndex, rewire_rotary, rotary_inputs
    from trtllm_kit.export.io_spec import Anchors

    seen = {}

    class Layer:  # what rewire_rotary uses of the plugin layer
        def __init__(self, outs):
            self.outs = outs

        def get_output(self, i):
            return self.outs[i]

    made = {}

    def stand_in(trt_module, network, q_lin, k_lin, cos, sin, nh, nkv, hd, scale, name):
        seen[name] = (q_lin.name, k_lin.name, cos.name, sin.name, nh, nkv, hd, scale)
        made[name] = [network.add_identity(t).get_output(0) for t in (q_lin, k_lin)]
        return Layer(made[name])

    monkeypatch.setattr(P, "add_rotary", stand_in)
    spec, _ = load_model(name)
    onnx_path = tiny_exports[name] / "model.onnx"
    found = rotary_inputs(onnx_path, spec.num_layers)
    model = onnx.load(str(onnx_path), load_external_data=False)
    producers = {o: n for n in model.graph.node for o in n.output}
    for i, (q_lin, k_lin, cos, sin, scale) in found.items():
        assert scale == pytest.approx(spec.layers[i].head_dim ** -0.5)  # read off the export's constant
        for lin, proj in ((q_lin, "q_proj"), (k_lin, "k_proj")):  # the projection's output (after any bias)
            node = producers[lin]
            assert node.op_type in ("MatMul", "Add") and any(proj in x for x in node.input) or \
                any(proj in x for x in producers[node.input[0]].input), (i, lin)
        assert "Gather" in {producers[producers[t].input[0]].op_type for t in (cos, sin)}  # per position
    logger = trt.Logger(trt.Logger.ERROR)
    network = trt.Builder(logger).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(network, logger).parse(static_cache_onnx(onnx_path, 24), str(onnx_path))
    ctx = NetworkContext(trt, network, spec, None, None, None, strongly_typed=True, rope="plugin")
    index = NetworkIndex(network)
    for i, L in enumerate(spec.layers):
        q, k = rewire_rotary(ctx, index, i, found[i])
        assert seen[f"rotary.{i}"] == (*found[i][:4], L.n_heads, L.n_kv_heads, L.head_dim, found[i][4])
        assert [q.name, k.name] == [t.name for t in made[f"rotary.{i}"]]  # the plugin's outputs, not the export's
        assert q.name != Anchors.q(i) and k.name != Anchors.k_new(i)
    if name == "tiny-llama-width":
        assert len({seen[f"rotary.{i}"][4] for i in range(spec.num_layers)}) > 1  # heads differ per block
    with pytest.raises(ToolkitError, match="rotary is not what this version's exporter writes"):
        rotary_inputs(onnx_path, spec.num_layers + 1)  # a block the export does not have


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-width"])
def test_projections_of_one_activation_fuse_into_one_weight_input(tiny_exports, name, tmp_path, monkeypatch):
    """--weights inputs with fusion (on by default with the GEMM plugin; TRTLLM_KIT_FUSE=1 forces it here): each
    block's q/k/v and gate/up weights become one input holding them side by side, one multiply each, and TensorRT-RTX
    builds the network on the CPU (the tokens are checked on the GPU machine)."""
    import numpy as np
    from safetensors.numpy import load_file

    from trtllm_kit.engine.weights import FUSED_SEP, onnx_initializers

    monkeypatch.setenv("TRTLLM_KIT_FUSE", "1")
    spec, _ = load_model(name)
    eng = engine_from_onnx(tiny_exports[name], tmp_path / "e", opts(weights="inputs"), progress=False)
    tensors = eng.manifest.weight_inputs.tensors
    fused = [k for k in tensors if FUSED_SEP in k]
    assert len(fused) == 2 * spec.num_layers  # q+k+v and gate+up of every block
    assert len(tensors) == 4 * spec.num_layers + (1 if spec.tie_word_embeddings else 2)
    stored = load_file(str(eng.out_dir / eng.manifest.weight_inputs.file))
    for key in fused:
        members = key.split(FUSED_SEP)
        assert len(members) in (2, 3) and all(m.endswith(".weight") for m in members)
        original = onnx_initializers(tiny_exports[name] / "model.onnx", members)
        assert np.array_equal(stored[key], np.concatenate([np.asarray(original[m]) for m in members], axis=1))
        assert list(stored[key].shape) == tensors[key]


def test_the_gemm_rewrite_reads_weights_stored_out_x_in(tiny_exports):
    """``weights_to_inputs(out_x_in=True)``: every projection and the LM head becomes an (N, K) input (the
    initializer transposed), read through one transpose; the rewrite's search finds each multiply with ``w_layout``
    1 and the input as stored, so the plugin reads it as bound; the embedding table stays as exported."""
    import numpy as np

    from trtllm_kit.engine.builder import _create_network
    from trtllm_kit.engine.flavors import resolve_flavor
    from trtllm_kit.engine.gemm import matmuls_by_weight
    from trtllm_kit.engine.weights import onnx_initializers, weights_to_inputs

    flavor = resolve_flavor("auto", None)
    trt = flavor.trt
    logger = trt.Logger(trt.Logger.ERROR)
    network = _create_network(flavor, trt.Builder(logger))
    path = tiny_exports["tiny-llama-width"] / "model.onnx"
    assert trt.OnnxParser(network, logger).parse_from_file(str(path))
    arrays = weights_to_inputs(trt, network, path, out_x_in=True)
    original = onnx_initializers(path, list(arrays))
    found = matmuls_by_weight(trt, network, set(arrays))
    assert sorted(w.name for _, w, _ in found) == sorted(set(arrays) - {"model.embed_tokens.weight"})
    for layer, w, w_layout in found:
        assert w_layout == 1 and tuple(w.shape) == arrays[w.name].shape
        made = np.asarray(arrays[w.name])
        assert np.array_equal(made, np.asarray(original[w.name]).T) and made.flags.c_contiguous
        assert layer.get_input(0).shape[-1] == w.shape[1] and layer.get_output(0).shape[-1] == w.shape[0], layer.name
    assert np.array_equal(arrays["model.embed_tokens.weight"], np.asarray(original["model.embed_tokens.weight"]))


@pytest.mark.parametrize("name,extra_reader", [("tiny-llama", False), ("tiny-llama-width", False),
                                               ("tiny-llama", True)])
def test_the_fold_pass_finds_swiglu_and_residual_adds(tiny_exports, name, extra_reader, monkeypatch):
    """``folds.fold_into_gemms`` on a parsed export with the weights fused and stored out x in, the GEMM layers stood
    in for by Einsum layers (the plugin needs nvcc and full TensorRT; what is tested is which ops it finds):
    every block's SwiGLU product goes into its fused gate/up multiply (its epilogue), whose output the down multiply
    reads as x, and both residual adds into the multiplies before them unless a bias add sits between
    (tiny-llama-width's o and down); the q/k/v and gate/up multiplies keep their inputs (no RMSNorm plugin here) and
    nothing else is folded. ``extra_reader``: block 0's SwiGLU output is also a network output, so its gate/up
    multiply must keep writing [gate | up] and block 0's down multiply takes SwiGLU as its prologue instead. The
    tokens of folded engines are checked on the GPU machine."""
    from trtllm_kit.engine import plugin as P
    from trtllm_kit.engine.builder import _create_network
    from trtllm_kit.engine.flavors import resolve_flavor
    from trtllm_kit.engine.folds import fold_into_gemms
    from trtllm_kit.engine.gemm import rewire_gemms
    from trtllm_kit.engine.kv_layouts import NetworkContext, NetworkIndex
    from trtllm_kit.engine.weights import weights_to_inputs
    from trtllm_kit.export.io_spec import Anchors

    flavor = resolve_flavor("auto", None)
    trt = flavor.trt
    calls = []

    def stand_in(trt_module, network, x, w, name, w_layout=0, prologue="none", scale=None, eps=0.0, residual=None,
                 swiglu=False):
        calls.append((name, x.name, w.name, prologue, residual.name if residual is not None else None, swiglu))
        # a layer reading x and w as the plugin does, its output (..., N), (..., N / 2) with swiglu (the first half
        # of w's rows; SwiGLU's halves are not multiplied here)
        if swiglu:
            n, k = w.shape
            w = network.add_slice(w, (0, 0), (n // 2, k), (1, 1)).get_output(0)
        layer = network.add_einsum([x, w], "bsk,nk->bsn" if prologue != "swiglu" else "bsj,nk->bsn")
        layer.name = name
        return layer

    monkeypatch.setattr(P, "add_gemm", stand_in)
    spec, _ = load_model(name)
    logger = trt.Logger(trt.Logger.ERROR)
    network = _create_network(flavor, trt.Builder(logger))
    path = tiny_exports[name] / "model.onnx"
    assert trt.OnnxParser(network, logger).parse_from_file(str(path))
    arrays = weights_to_inputs(trt, network, path, fuse=True, out_x_in=True)
    ctx = NetworkContext(trt, network, spec, None, None, None, strongly_typed=True, gemm="plugin")
    gemms = []
    n = rewire_gemms(ctx, set(arrays), gemms)
    assert n == len(gemms) == 4 * spec.num_layers + (0 if spec.tie_word_embeddings else 1)
    if extra_reader:
        down0 = next(layer for layer, _ in gemms if layer.get_input(1).name == "model.layers.0.mlp.down_proj.weight")
        network.mark_output(down0.get_input(0))
    calls.clear()
    counts = fold_into_gemms(ctx, gemms)
    L = spec.num_layers
    adds = sum((not b.o_bias) + (not b.down_bias) for b in spec.layers)  # a bias add between: not folded
    assert counts == {"rms_norm": 0, "swiglu": L, "residual": adds, "norm_scale_in_weights": 0}, counts
    folded = {c[0]: c for c in calls}
    # gate/up (SwiGLU), down + residual, o + residual
    assert len(folded) == L - extra_reader + sum(not b.o_bias for b in spec.layers) + sum(
        not b.down_bias for b in spec.layers)
    index = NetworkIndex(network)
    made = {index.producers[t].name: t for t in index.tensors if index.producers[t].name.endswith(".folded")}
    o_out = {}  # block -> the folded o multiply's output
    gate_up_out = {}  # block -> the folded gate/up multiply's output
    for layer, _ in sorted(gemms, key=lambda g: "down_proj" in g[0].get_input(1).name):  # down last
        w = layer.get_input(1).name
        _, x, _, prologue, residual, swiglu = folded.get(f"{layer.name}.folded", (None,) * 6)
        block = int(w.split(".")[2]) if w.startswith("model.layers.") else None
        if "o_proj" in w:
            assert prologue == ("none" if not spec.layers[block].o_bias else None), w
            if prologue is not None:
                assert residual is not None and not swiglu, w
                o_out[block] = made[f"{layer.name}.folded"]
        elif "up_proj" in w and extra_reader and block == 0:
            assert prologue is None, w  # not folded: its [gate | up] output still read by the SwiGLU ops
            gate_up_out[block] = layer.get_output(0).name
        elif "up_proj" in w:  # the fused gate/up multiply: SwiGLU after it, half as many outputs
            assert prologue == "none" and swiglu and residual is None, w
            out = made[f"{layer.name}.folded"]
            gate_up_out[block] = out
            assert index.tensors[out].shape[-1] == layer.get_output(0).shape[-1] // 2, w
        elif "down_proj" in w:
            if spec.layers[block].down_bias:  # nothing of its own to fold: the original layer, re-pointed
                assert prologue is None and layer.get_input(0).name == gate_up_out[block], w
                continue
            down = index.producers[made[f"{layer.name}.folded"]]  # re-pointed once gate/up was folded (settle)
            if extra_reader and block == 0:  # SwiGLU as its prologue, reading [gate | up] whole
                assert prologue == "swiglu" and x == gate_up_out[block], (w, x)
            else:
                assert prologue == "none" and down.get_input(0).name == gate_up_out[block] and not swiglu, (w, x)
            # the residual stream after attention: o's output
            assert residual == o_out.get(block, Anchors.attn_res(block)), (w, residual)
        else:
            assert prologue is None, w  # q/k/v (its norm is an exported op here) and the head


def _norm_then_gemms(trt, network, x, scale):
    """A stand-in ``rms_norm.n`` layer (x times scale: two inputs, as the norm plugin reads x and its scale) read by two
    GEMM stand-ins ``gemm.a`` and ``gemm.b`` (Einsum layers over the (8, 8) weight inputs ``a.weight``, ``b.weight``):
    (the norm layer, ``[(layer, w_layout 1)]``)."""
    norm = network.add_elementwise(x, scale, trt.ElementWiseOperation.PROD)
    norm.name = "rms_norm.n"
    gemms = []
    for name in ("a", "b"):
        w = network.add_input(f"{name}.weight", trt.float16, (8, 8))
        layer = network.add_einsum([norm.get_output(0), w], "bsk,nk->bsn")
        layer.name = f"gemm.{name}"
        gemms.append((layer, 1))
    return norm, gemms


def _fold_network(trt, extra_reader: bool, bias_shape):
    """x -> "rms_norm.n" (a two-input stand-in layer, as the norm plugin reads x and its scale) -> two GEMM stand-ins
    (a, b), b's output + r named as a block's residual add; ``extra_reader`` adds a non-GEMM reader of the norm;
    ``bias_shape`` makes r that shape (broadcast) instead of b's."""
    from trtllm_kit.export.io_spec import Anchors

    network = trt.Builder(trt.Logger(trt.Logger.ERROR)).create_network(
        1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    x = network.add_input("x", trt.float16, (-1, -1, 8))
    norm, gemms = _norm_then_gemms(trt, network, x, network.add_input("scale", trt.float16, (1, 1, 8)))
    r = network.add_input("r", trt.float16, bias_shape or (-1, -1, 8))
    add = network.add_elementwise(gemms[1][0].get_output(0), r, trt.ElementWiseOperation.SUM)
    add.get_output(0).name = Anchors.attn_res(0)
    outs = [gemms[0][0].get_output(0), add.get_output(0)]
    if extra_reader:
        outs.append(network.add_identity(norm.get_output(0)).get_output(0))
    for i, t in enumerate(outs):
        t.name = t.name if i == 1 else f"out{i}"
        network.mark_output(t)
    return network, gemms


@pytest.mark.parametrize("extra_reader,bias_shape", [(False, None), (True, None), (False, (1, 1, 8))],
                         ids=["folds", "norm-read-elsewhere", "broadcast-add"])
def test_the_fold_pass_leaves_what_it_cannot_fold(extra_reader, bias_shape, monkeypatch):
    """An RMSNorm folds into the multiplies only when they are its every reader (another reader would still need
    it), and a residual add only when both operands have one shape (the plugin does not broadcast). The layers are
    stand-ins (the plugins need full TensorRT); what is tested is what the pass decides."""
    import tensorrt_rtx_bindings as trt

    from trtllm_kit.engine import plugin as P
    from trtllm_kit.engine.folds import fold_into_gemms
    from trtllm_kit.engine.kv_layouts import NetworkContext

    calls = []

    def stand_in(trt_module, network, x, w, name, w_layout=0, prologue="none", scale=None, eps=0.0, residual=None,
                 swiglu=False):
        calls.append((name, x.name, prologue, residual.name if residual is not None else None))
        layer = network.add_einsum([x, w], "bsk,nk->bsn")
        layer.name = name
        return layer

    monkeypatch.setattr(P, "add_gemm", stand_in)
    network, gemms = _fold_network(trt, extra_reader, bias_shape)
    spec, _ = load_model("tiny-llama")
    ctx = NetworkContext(trt, network, spec, None, None, None, strongly_typed=True, gemm="plugin")
    counts = fold_into_gemms(ctx, gemms)
    folded = {c[0]: c[1:] for c in calls}
    if not extra_reader:
        assert counts["rms_norm"] == 2 and folded["gemm.a.folded"] == ("x", "rms_norm", None)
    else:
        assert counts["rms_norm"] == 0 and "gemm.a.folded" not in folded
    if bias_shape is None:
        assert counts["residual"] == 1 and folded["gemm.b.folded"][2] == "r"
    else:
        assert counts["residual"] == 0 and folded.get("gemm.b.folded", (None, None, None))[2] is None


@pytest.mark.parametrize("knob", [None, "0"])
def test_the_fold_pass_multiplies_norm_scales_into_weights(knob, monkeypatch):
    """An RMSNorm whose scale is a constant folds into a multiply as ``rms_norm_folded`` with the scale multiplied into
    the weight input's K axis (out x in: its columns), rounded once to fp16, when that weight is read by the multiply
    alone among the live layers; a weight read elsewhere too keeps its values and the multiply the ``rms_norm``
    prologue with the scale as an input; TRTLLM_KIT_SCALE_IN_WEIGHTS=0 scales nothing. Stand-in layers, as above."""
    import numpy as np
    import tensorrt_rtx_bindings as trt

    from trtllm_kit.engine import plugin as P
    from trtllm_kit.engine.folds import fold_into_gemms
    from trtllm_kit.engine.kv_layouts import NetworkContext

    if knob is not None:
        monkeypatch.setenv("TRTLLM_KIT_SCALE_IN_WEIGHTS", knob)
    calls = {}

    def stand_in(trt_module, network, x, w, name, w_layout=0, prologue="none", scale=None, eps=0.0, residual=None,
                 swiglu=False):
        calls[name] = (x.name, prologue, scale is not None)
        layer = network.add_einsum([x, w], "bsk,nk->bsn")
        layer.name = name
        return layer

    monkeypatch.setattr(P, "add_gemm", stand_in)
    network = trt.Builder(trt.Logger(trt.Logger.ERROR)).create_network(
        1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    x = network.add_input("x", trt.float16, (-1, -1, 8))
    g = (np.arange(1, 9, dtype=np.float16) / 3).astype(np.float16)
    _, gemms = _norm_then_gemms(trt, network, x, network.add_constant((1, 1, 8), g).get_output(0))
    for layer, _ in gemms:
        network.mark_output(layer.get_output(0))
    rng = np.random.default_rng(0)
    arrays = {n: rng.standard_normal((8, 8)).astype(np.float16) for n in ("a.weight", "b.weight")}
    before = {n: a.copy() for n, a in arrays.items()}
    arrays["a.weight"].flags.writeable = False  # as a view of the export's bytes would be: scaled as a copy
    network.mark_output(network.add_identity(network.get_input(2)).get_output(0))  # b.weight read elsewhere too
    network.add_identity(network.get_input(1))  # a.weight read by a layer nothing reads (as a replaced multiply)
    spec, _ = load_model("tiny-llama")
    ctx = NetworkContext(trt, network, spec, None, None, None, strongly_typed=True, gemm="plugin",
                         weight_arrays=arrays)
    counts = fold_into_gemms(ctx, gemms)
    assert calls["gemm.b.folded"] == ("x", "rms_norm", True) and np.array_equal(arrays["b.weight"], before["b.weight"])
    if knob == "0":
        assert counts["norm_scale_in_weights"] == 0 and calls["gemm.a.folded"] == ("x", "rms_norm", True)
        assert np.array_equal(arrays["a.weight"], before["a.weight"])
    else:
        assert counts["norm_scale_in_weights"] == 1 and calls["gemm.a.folded"] == ("x", "rms_norm_folded", False)
        want = (before["a.weight"].astype(np.float32) * g.astype(np.float32)[None, :]).astype(np.float16)
        assert arrays["a.weight"].dtype == np.float16 and np.array_equal(arrays["a.weight"], want)
    assert counts["rms_norm"] == 2


@pytest.mark.parametrize("case", ["folds", "other-reader", "head-dim-12", "residual"])
def test_the_fold_pass_moves_the_fused_rotary_into_the_qkv_multiply(case, monkeypatch):
    """``folds.fold_rope_into_gemms``: a block's fused rotary layer (``rotary.0.qkv``; a stand-in layer reading the
    multiply's output and the two tables) whose input is the whole output of a GEMM plugin layer recorded by
    ``fold_into_gemms`` becomes that multiply's rotary epilogue: the layer is made again with the same x, w and
    prologue plus ``rope=(heads, kv heads, head_dim, scale)`` and the tables, and the rotary layer's readers read it.
    Not when the multiply's output has another reader, head_dim is not a multiple of 8 (the GEMV's row pairs), or the
    multiply has an epilogue already. Stand-in layers, as above (the plugin's math is checked on the GPU)."""
    import dataclasses

    import tensorrt_rtx_bindings as trt

    from trtllm_kit.engine import plugin as P
    from trtllm_kit.engine.folds import fold_rope_into_gemms
    from trtllm_kit.engine.kv_layouts import NetworkContext

    calls = {}

    def stand_in(trt_module, network, x, w, name, w_layout=0, prologue="none", scale=None, eps=0.0, residual=None,
                 swiglu=False, rope=None, cos=None, sin=None):
        calls[name] = (x.name, w.name, w_layout, prologue, rope, cos.name if cos is not None else None,
                       sin.name if sin is not None else None)
        layer = network.add_einsum([x, w], "bsk,nk->bsn")
        layer.name = name
        return layer

    monkeypatch.setattr(P, "add_gemm", stand_in)
    spec, _ = load_model("tiny-llama")
    L0 = spec.layers[0]
    assert L0.head_dim % 8 == 0
    hd = 12 if case == "head-dim-12" else L0.head_dim
    if hd != L0.head_dim:
        spec = dataclasses.replace(spec, layers=(dataclasses.replace(L0, head_dim=hd),) + tuple(spec.layers[1:]))
    network = trt.Builder(trt.Logger(trt.Logger.ERROR)).create_network(
        1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    x = network.add_input("x", trt.float16, (-1, -1, 8))
    w = network.add_input("qkv.weight", trt.float16, (24, 8))
    r = network.add_input("r", trt.float16, (-1, -1, 24))
    cos, sin = (network.add_input(n, trt.float16, (-1, -1, 24)) for n in ("cos", "sin"))
    qkv = stand_in(trt, network, x, w, "gemm.qkv.folded", w_layout=1, prologue="rms_norm_folded", eps=1e-5,
                   residual=r if case == "residual" else None)
    fields = dict(w_layout=1, prologue="rms_norm_folded", eps=1e-5, epilogue="residual" if case == "residual" else "none")
    rope = network.add_concatenation([qkv.get_output(0), cos, sin])  # reads the output and the tables, as the plugin
    rope.axis = 2
    rope.name = "rotary.0.qkv"
    attn = network.add_identity(rope.get_output(0))  # the attention plugin's stand-in
    network.mark_output(attn.get_output(0))
    if case == "other-reader":
        network.mark_output(network.add_identity(qkv.get_output(0)).get_output(0))
    ctx = NetworkContext(trt, network, spec, None, None, None, strongly_typed=True, gemm="plugin", rope="plugin")
    ctx.rope_scales["rotary.0"] = 0.125
    calls.clear()
    done = fold_rope_into_gemms(ctx, {"gemm.qkv.folded": fields})
    if case != "folds":
        assert done == 0 and not calls and attn.get_input(0).name == rope.get_output(0).name
        return
    assert done == 1
    assert calls["gemm.qkv.folded.rope"] == ("x", "qkv.weight", 1, "rms_norm_folded",
                                             (L0.n_heads, L0.n_kv_heads, hd, 0.125), "cos", "sin")
    new = next(network.get_layer(i) for i in range(network.num_layers)
               if network.get_layer(i).name == "gemm.qkv.folded.rope")
    assert attn.get_input(0).name == new.get_output(0).name  # the rotary layer's reader reads the multiply now


@pytest.mark.parametrize("fuse", ["0", "1"])
def test_an_engine_with_weights_stored_out_x_in_builds(tiny_exports, fuse, tmp_path, monkeypatch):
    """The whole build with the weights stored out x in (the GEMM plugin's default; TRTLLM_KIT_GEMM_LAYOUT=out_x_in
    forces it here, where TensorRT-RTX multiplies through the transposes): weights.safetensors holds each projection
    (N, K), fused ones with the members' rows stacked, and engine.json says so (the tokens are checked on the GPU)."""
    import numpy as np
    from safetensors.numpy import load_file

    from trtllm_kit.engine.weights import FUSED_SEP, onnx_initializers

    monkeypatch.setenv("TRTLLM_KIT_GEMM_LAYOUT", "out_x_in")
    monkeypatch.setenv("TRTLLM_KIT_FUSE", fuse)
    name = "tiny-llama-width"
    spec, _ = load_model(name)
    eng = engine_from_onnx(tiny_exports[name], tmp_path / "e", opts(weights="inputs"), progress=False)
    assert eng.manifest.builder_settings["weight_layout"] == "out_x_in"
    tensors = eng.manifest.weight_inputs.tensors
    stored = load_file(str(eng.out_dir / eng.manifest.weight_inputs.file))
    assert sum(FUSED_SEP in k for k in tensors) == (2 * spec.num_layers if fuse == "1" else 0)
    for key, shape in tensors.items():
        members = key.split(FUSED_SEP)
        original = onnx_initializers(tiny_exports[name] / "model.onnx", members)
        if key == "model.embed_tokens.weight":
            want = np.asarray(original[key])
        else:
            want = np.concatenate([np.asarray(original[m]).T for m in members], axis=0)
        assert list(stored[key].shape) == shape == list(want.shape) and np.array_equal(stored[key], want), key


def test_reuse_compares_the_op_folding(engines, monkeypatch):
    """An engine built with the GEMM plugin folded the small ops into it or not (``builder_settings.op_folding``;
    TRTLLM_KIT_FOLD=0 at build time: not), and with folding the norms' scales into the weights or not
    (``norm_scale_in_weights``; TRTLLM_KIT_SCALE_IN_WEIGHTS=0: not); a build that would do otherwise does not reuse
    it. Engines from before the settings read as neither."""
    from trtllm_kit.engine import plugin as P
    from trtllm_kit.engine.manifest import PluginRecord

    m = engines[("tiny-llama", "inplace")].manifest
    record = PluginRecord(file="lib.so", sha256="0" * 64, source_sha256=P.source_sha256(gemm=True), name="A",
                          version="1", gemm="TrtllmKitGemm", norm="TrtllmKitRMSNorm", rope="TrtllmKitRotary",
                          links=["/x/libcublasLt.so.13"])
    asked = m.build.model_copy(update={"kv_mode": "plugin", "gemm": "plugin"})
    folded = m.model_copy(update={"build": asked, "builder_settings": {**m.builder_settings, "op_folding": "on",
                                                                       "norm_scale_in_weights": "on"},
                                  "kv_layout": m.kv_layout.model_copy(update={"name": "plugin", "plugin": record})})
    same = (folded.flavor, folded.trt_version, m.source.onnx_sha256, m.source.weights_sha256)
    monkeypatch.delenv("TRTLLM_KIT_FOLD", raising=False)
    monkeypatch.delenv("TRTLLM_KIT_SCALE_IN_WEIGHTS", raising=False)
    assert folded.gemm_used == "plugin" and folded.differences(asked, *same) == []
    monkeypatch.setenv("TRTLLM_KIT_SCALE_IN_WEIGHTS", "0")
    assert folded.differences(asked, *same) == ["norm_scale_in_weights on -> off"]
    monkeypatch.delenv("TRTLLM_KIT_SCALE_IN_WEIGHTS")
    monkeypatch.setenv("TRTLLM_KIT_FOLD", "0")
    assert folded.differences(asked, *same) == ["op_folding on -> off"]
    older = folded.model_copy(update={"builder_settings": {}})
    assert older.differences(asked, *same) == []
    monkeypatch.delenv("TRTLLM_KIT_FOLD")
    assert older.differences(asked, *same) == ["op_folding off -> on"]


def test_reuse_compares_the_weights_fusion_and_layout(tiny_exports, tmp_path, monkeypatch):
    """An engine whose weight inputs were fused or stored out x in (the GEMM plugin's defaults; the A/B knobs force
    them here) is not reused by a build that would store them otherwise: a server would bind other tensors. Engines
    from before these were recorded read as in x out, fused when they have fused groups. A knob's unknown value is
    one line before any work."""
    from trtllm_kit.engine.manifest import EngineManifest

    monkeypatch.setenv("TRTLLM_KIT_FUSE", "1")
    monkeypatch.setenv("TRTLLM_KIT_GEMM_LAYOUT", "out_x_in")
    eng = engine_from_onnx(tiny_exports["tiny-llama"], tmp_path / "e", opts(weights="inputs"), progress=False)
    m = EngineManifest.load(eng.out_dir)
    assert m.weight_choices() == ("on", "out_x_in")
    same = (m.build, m.flavor, m.trt_version, m.source.onnx_sha256, m.source.weights_sha256)
    assert m.differences(*same) == []
    monkeypatch.delenv("TRTLLM_KIT_FUSE")
    monkeypatch.delenv("TRTLLM_KIT_GEMM_LAYOUT")  # TensorRT's multiplies (RTX): neither by default
    assert m.differences(*same) == ["weight_fusion on -> off", "weight_layout out_x_in -> in_x_out"]
    monkeypatch.setenv("TRTLLM_KIT_FUSE", "qkv")
    monkeypatch.setenv("TRTLLM_KIT_GEMM_LAYOUT", "out_x_in")
    assert m.differences(*same) == ["weight_fusion on -> qkv"]
    old = m.model_copy(update={"builder_settings": {"fused_weight_groups": 4}})  # recorded before the fields
    assert old.weight_choices() == ("on", "in_x_out")
    monkeypatch.setenv("TRTLLM_KIT_FUSE", "true")
    out = tmp_path / "e2"
    assert_one_line_error(cli("build", str(tiny_exports["tiny-llama"]), "--weights", "inputs", "--out", str(out)),
                          "TRTLLM_KIT_FUSE=true is not one of 1, 0, qkv")
    assert not out.exists()


@pytest.mark.parametrize("env,value,listed", [("TRTLLM_KIT_FOLD", "yes", "1, 0"), ("TRTLLM_KIT_GEMV_UNROLL", "3", "4, 8, 16"),
                                              ("TRTLLM_KIT_PDL", "on", "1, 0"),
                                              ("TRTLLM_KIT_SPLIT_KV", "3", "0, 1, 2, 4, 8, 16"),
                                              ("TRTLLM_KIT_PAST_ATTENTION", "bmm", "split-vt, reduce-vt, reduce, matmul"),
                                              ("TRTLLM_KIT_PAST_ATTENTION", "", "split-vt, reduce-vt, reduce, matmul"),
                                              ("TRTLLM_KIT_PAST_ATTENTION", "matmul ", "split-vt, reduce-vt, reduce, matmul")])
def test_fold_and_decode_knobs_are_checked_before_any_work(tiny_exports, tmp_path, monkeypatch, env, value, listed):
    """The fold pass and the decode kernels' A/B knobs: an unknown value is one line before the build starts (the GEMM
    plugin would have read it silently as a default), quoted where it is empty or has spaces around it; folding is on
    only with the GEMM plugin, off with TRTLLM_KIT_FOLD=0."""
    from trtllm_kit.engine.folds import fold_choice

    monkeypatch.delenv("TRTLLM_KIT_FOLD", raising=False)
    assert (fold_choice("plugin"), fold_choice("trt")) == ("on", "off")
    monkeypatch.setenv("TRTLLM_KIT_FOLD", "0")
    assert fold_choice("plugin") == "off"
    monkeypatch.delenv("TRTLLM_KIT_FOLD")
    monkeypatch.setenv(env, value)
    out = tmp_path / "e"
    assert_one_line_error(cli("build", str(tiny_exports["tiny-llama"]), "--out", str(out)),
                          f"{env}={value if value.strip() == value and value else repr(value)} is not one of {listed}")
    assert not out.exists()


# Inputs of ONNX ops that define an output's shape: a runtime value reaching one makes TensorRT 8.6 treat the
# engine input it came from as a shape tensor, read from host memory (seen on an H200 with write_indices).
SHAPE_OPERANDS = {"Range": (0, 1, 2), "Reshape": (1,), "Expand": (1,), "Slice": (1, 2, 3, 4), "Tile": (1,),
                  "ConstantOfShape": (0,), "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,), "Pad": (1,),
                  "TopK": (1,), "OneHot": (1,), "Resize": (3,)}


def _values_feeding_shapes(model: onnx.ModelProto) -> list[str]:
    """Shape-defining operands that depend on an input's values (not only on its shape)."""
    runtime = {i.name for i in model.graph.input}
    tainted, bad = set(runtime), []
    for node in model.graph.node:  # the exporter and the rewrite keep nodes in topological order
        for pos in SHAPE_OPERANDS.get(node.op_type, ()):
            if pos < len(node.input) and node.input[pos] in tainted:
                bad.append(f"{node.op_type} {node.name or node.output[0]} input {pos} ({node.input[pos]})")
        if node.op_type != "Shape" and any(i in tainted for i in node.input):
            tainted.update(node.output)
    return bad


@pytest.mark.parametrize("layout", ["portable", "static", "new-rows"])
def test_no_runtime_value_decides_a_shape(tiny_exports, layout):
    """Every engine input is an execution tensor (device memory): no value of input_ids, positions, the mask,
    the caches or write_indices decides a shape, in the exported graph and in its static-cache and new-rows
    (portable-static) rewrites."""
    for name in TINY:
        path = tiny_exports[name] / "model.onnx"
        model = {"portable": lambda: onnx.load(str(path), load_external_data=False),
                 "static": lambda: onnx.load_from_string(static_cache_onnx(path, 24)),
                 "new-rows": lambda: onnx.load_from_string(new_rows_onnx(path))}[layout]()
        assert _values_feeding_shapes(model) == [], name


@pytest.mark.parametrize("past_form", ["reduce-vt", "reduce", "matmul", "split-vt"])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-width"])
def test_portable_static_attention_reads_the_rotary_plugin(tiny_exports, name, monkeypatch, past_form):
    """--kv-mode portable-static --rope plugin: after ``rewire_rotaries`` every block's TensorRT attention (the past's
    scores, in either form, and the new keys' score multiply) reads the rotary layer's q, and ``present.i.key`` its k,
    with each block's own heads.
    Stand-in layers (the plugin needs nvcc and full TensorRT); the fold of the rotary into the q/k/v multiply and the
    tokens of such engines are checked on the GPU machine (``tests/test_gpu.py``, ``portable-static+norm+rope``)."""
    from trtllm_kit.engine import plugin as P
    from trtllm_kit.engine.builder import _create_network
    from trtllm_kit.engine.flavors import resolve_flavor
    from trtllm_kit.engine.kv_layouts import NetworkContext, NetworkIndex, rewire_rotaries
    from trtllm_kit.export.io_spec import present_name

    flavor = resolve_flavor("auto", None)
    trt = flavor.trt
    made, seen = {}, {}

    class Layer:  # what the rewrites use of the plugin layer
        def __init__(self, outs):
            self.outs = outs
            self.num_outputs = len(outs)

        def get_output(self, i):
            return self.outs[i]

    def heads(network, t, hd):  # (B, S, n * hd) -> (B, n, S, hd), as the plugin's outputs
        layer = network.add_shuffle(t)
        layer.reshape_dims = (0, 0, -1, hd)
        layer.second_transpose = (0, 2, 1, 3)
        return layer.get_output(0)

    def stand_in(trt_module, network, q_lin, k_lin, cos, sin, nh, nkv, hd, scale, name):
        made[name] = [heads(network, t, hd) for t in (q_lin, k_lin)]
        seen[name] = (nh, nkv, hd)
        return Layer(made[name])

    monkeypatch.setattr(P, "add_rotary", stand_in)
    spec, _ = load_model(name)
    path = tiny_exports[name] / "model.onnx"
    logger = trt.Logger(trt.Logger.ERROR)
    network = _create_network(flavor, trt.Builder(logger))
    assert trt.OnnxParser(network, logger).parse(new_rows_onnx(path, past_form), str(path))
    ctx = NetworkContext(trt, network, spec, None, None, None, strongly_typed=True, gemm="plugin", rope="plugin",
                         onnx_path=path)
    assert rewire_rotaries(ctx) == spec.num_layers

    def readers(t):
        return sorted(layer.name for layer, _ in NetworkIndex(network).consumers.get(t.name, []))

    def present_reads(i, kv):
        index = NetworkIndex(network)
        return index.producers[present_name(i, kv)].get_input(0).name

    for i in range(spec.num_layers):
        q, k = made[f"rotary.{i}"]
        past = ".past/node" if past_form == "matmul" else ".past.a/node"  # the MatMul, or the product's unsqueeze
        assert any(r.endswith(past) for r in readers(q)) and any(r.endswith(".new/node") for r in readers(q))
        assert present_reads(i, "key") == k.name
    assert [seen[f"rotary.{i}"] for i in range(spec.num_layers)] == [(L.n_heads, L.n_kv_heads, L.head_dim)
                                                                      for L in spec.layers]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-width"])
def test_portable_static_score_multiplies_read_the_keys_untransposed(tiny_exports, name, tmp_path, monkeypatch):
    """``rewire_attention_multiplies`` on the MatMul form (``TRTLLM_KIT_PAST_ATTENTION=matmul``): each block's two score
    multiplies (past and new keys) read the keys as they are with TensorRT's transposed operand, not through a
    transpose layer, the value multiplies are left as they are; an engine with the rewrite builds (TensorRT-RTX; its
    tokens are checked on the GPU machine)."""
    from trtllm_kit.engine.builder import _create_network
    from trtllm_kit.engine.flavors import resolve_flavor
    from trtllm_kit.engine.kv_layouts import NetworkContext, rewire_attention_multiplies

    flavor = resolve_flavor("auto", None)
    trt = flavor.trt
    spec, _ = load_model(name)
    path = tiny_exports[name] / "model.onnx"
    logger = trt.Logger(trt.Logger.ERROR)
    network = _create_network(flavor, trt.Builder(logger))
    assert trt.OnnxParser(network, logger).parse(new_rows_onnx(path, "matmul"), str(path))
    ctx = NetworkContext(trt, network, spec, None, None, None, strongly_typed=True)
    assert rewire_attention_multiplies(ctx) == 2 * spec.num_layers
    ops = {}
    for li in range(network.num_layers):
        layer = network.get_layer(li)
        if layer.type == trt.LayerType.MATRIX_MULTIPLY and layer.name.endswith((".past/node", ".new/node")):
            layer.__class__ = trt.IMatrixMultiplyLayer
            reads = layer.get_input(1).name
            ops[layer.name] = (layer.op1, reads)
            if layer.op1 == trt.MatrixOperation.TRANSPOSE:  # the keys themselves
                assert reads.startswith("past_key_values.") or reads.endswith(".k_new"), (layer.name, reads)
            else:  # the values, as they are
                assert reads.startswith("past_key_values.") or reads.endswith(".v_new"), (layer.name, reads)
    assert len(ops) == 4 * spec.num_layers
    assert rewire_attention_multiplies(ctx) == 0  # nothing left to untranspose
    monkeypatch.setenv("TRTLLM_KIT_PAST_ATTENTION", "matmul")
    eng = engine_from_onnx(tiny_exports[name], tmp_path / "eng", BuildOptions(kv_mode="portable-static",
                                                                            limits=EngineLimits(4, 16, 32)),
                           progress=False)
    assert eng.manifest.kv_layout.name == "portable-static" and eng.manifest.builder_settings["past_attention"] == "matmul"


def test_portable_static_attends_the_past_without_multiplies(tiny_exports, tmp_path, monkeypatch):
    """The reduced past forms (``split-vt``, the default, ``reduce-vt`` and ``reduce``): the parsed portable-static
    network has no matrix multiply reading a cache input (the past's scores and output are broadcast products summed),
    only each block's score multiply of the new keys is rewired, and the default engine builds (TensorRT-RTX) and
    records the form in ``builder_settings``; ``TRTLLM_KIT_PAST_ATTENTION=matmul`` builds and records the MatMul form,
    and an engine of the other form is not reused. Its logits are checked against the growing cache in
    ``tests/test_portable_static.py`` (ONNX Runtime) and its tokens on the GPU machine."""
    from trtllm_kit.engine.builder import _create_network
    from trtllm_kit.engine.flavors import resolve_flavor
    from trtllm_kit.engine.kv_layouts import NetworkContext, NetworkIndex, rewire_attention_multiplies

    flavor = resolve_flavor("auto", None)
    trt = flavor.trt
    spec, _ = load_model("tiny-llama")
    path = tiny_exports["tiny-llama"] / "model.onnx"
    logger = trt.Logger(trt.Logger.ERROR)

    def reads_cache(layer, index) -> bool:  # through shape ops only
        for j in range(layer.num_inputs):
            t = layer.get_input(j)
            for _ in range(4):
                if t is None or t.name.startswith("past_key_values."):
                    return t is not None
                src = index.producers.get(t.name)
                if src is None or src.type not in (trt.LayerType.SHUFFLE, trt.LayerType.IDENTITY):
                    break
                t = src.get_input(0)
        return False

    for form in ("reduce-vt", "reduce", "split-vt"):
        network = _create_network(flavor, trt.Builder(logger))
        assert trt.OnnxParser(network, logger).parse(new_rows_onnx(path, form), str(path))
        ctx = NetworkContext(trt, network, spec, None, None, None, strongly_typed=True)
        assert rewire_attention_multiplies(ctx) == spec.num_layers, form  # the new keys' only
        index = NetworkIndex(network)
        multiplies = [network.get_layer(li) for li in range(network.num_layers)
                      if network.get_layer(li).type == trt.LayerType.MATRIX_MULTIPLY]
        assert multiplies and not [m.name for m in multiplies if reads_cache(m, index)], form
    opts = BuildOptions(kv_mode="portable-static", limits=EngineLimits(4, 16, 32))
    monkeypatch.delenv("TRTLLM_KIT_PAST_ATTENTION", raising=False)
    eng = engine_from_onnx(tiny_exports["tiny-llama"], tmp_path / "default", opts, progress=False)
    assert eng.manifest.builder_settings["past_attention"] == "split-vt" and eng.manifest.values_transposed
    reduced = eng.manifest
    monkeypatch.setenv("TRTLLM_KIT_PAST_ATTENTION", "matmul")
    eng = engine_from_onnx(tiny_exports["tiny-llama"], tmp_path / "matmul", opts, progress=False)
    m = eng.manifest
    assert m.builder_settings["past_attention"] == "matmul" and not m.values_transposed
    assert "transposed" not in m.kv_layout.description  # values laid out as the keys, and said so
    same = (m.flavor, m.trt_version, m.source.onnx_sha256, m.source.weights_sha256)
    assert m.differences(m.build, *same) == []  # reused while the variable asks for it
    assert reduced.differences(reduced.build, *same) == ["past_attention split-vt -> matmul"]  # else rebuilt


def test_the_past_attention_variable_is_noted_as_ignored_outside_portable_static(monkeypatch):
    """TRTLLM_KIT_PAST_ATTENTION only shapes portable-static engines: another layout's build says it ignores it (a
    user A/B-ing the portable layout would otherwise compare two identical engines), portable-static's does not."""
    from trtllm_kit.engine.builder import resolve_choices
    from trtllm_kit.engine.flavors import resolve_flavor

    flavor = resolve_flavor("auto", None)
    monkeypatch.setenv("TRTLLM_KIT_PAST_ATTENTION", "matmul")
    for mode, ignored in (("portable", True), ("portable-static", False)):
        notes: list[str] = []
        resolve_choices(BuildOptions(kv_mode=mode, limits=EngineLimits(4, 16, 32)), flavor, notes)
        assert any("TRTLLM_KIT_PAST_ATTENTION is ignored" in n for n in notes) == ignored, (mode, notes)


@pytest.mark.parametrize("env,value", [("TRTLLM_KIT_FUSE", "qkv"), ("TRTLLM_KIT_GEMM_LAYOUT", "out_x_in")])
def test_the_weight_input_variables_are_noted_as_ignored_for_weights_in_the_engine(monkeypatch, env, value):
    """TRTLLM_KIT_FUSE and TRTLLM_KIT_GEMM_LAYOUT only shape weight inputs: a build that keeps the weights in the
    engine says it ignores them (a new user's A/B compared two identical engines without a word), one with
    --weights inputs does not."""
    from trtllm_kit.engine.builder import resolve_choices
    from trtllm_kit.engine.flavors import resolve_flavor

    flavor = resolve_flavor("auto", None)
    monkeypatch.setenv(env, value)
    for weights, ignored in (("engine", True), ("inputs", False)):
        notes: list[str] = []
        resolve_choices(BuildOptions(kv_mode="portable-static", weights=weights, limits=EngineLimits(4, 16, 32)),
                        flavor, notes)
        assert any(f"{env} is ignored" in n for n in notes) == ignored, (weights, notes)


def test_stacked_rows_is_numpys_concatenation(tmp_path):
    """``stacked_rows`` (torch's CPU threads) writes exactly what numpy's transpose-and-concatenate did, from a
    read-only memory map as from an array, in both layouts: the weight inputs of an engine are bit for bit those of
    the numpy path it replaced."""
    from trtllm_kit.engine.weights import stacked_rows

    rng = np.random.default_rng(0)
    mats = [rng.standard_normal((48, n)).astype(np.float16) for n in (48, 16, 16)]
    np.save(tmp_path / "m.npy", mats[1])
    mats[1] = np.load(tmp_path / "m.npy", mmap_mode="r")
    got = stacked_rows(mats, transpose=True)
    assert got.flags.c_contiguous and got.flags.writeable
    np.testing.assert_array_equal(got, np.concatenate([np.asarray(m).T for m in mats], axis=0))
    np.testing.assert_array_equal(stacked_rows(mats, transpose=False), np.concatenate(mats, axis=1))
    np.testing.assert_array_equal(stacked_rows(mats[1:2], transpose=True), np.asarray(mats[1]).T)


def test_portable_static_with_transposed_values_builds_and_says_so(tiny_exports, tmp_path, monkeypatch):
    """``reduce-vt`` (set here as a user would ask for it; ``split-vt``, the default, stores the values alike): the
    engine's value caches are (batch, kv_heads, head_dim, past) in its profiles and I/O, its values come back (batch, kv_heads, head_dim, new), and
    ``engine.json`` says so (description, ``values_transposed``) for a server; keys as before. Built with
    TensorRT-RTX on the CPU; the logits of the graph are checked in ONNX Runtime (``tests/test_portable_static.py``),
    its tokens on the H200 (``tests/test_gpu.py``, ``portable-static*``)."""
    monkeypatch.setenv("TRTLLM_KIT_PAST_ATTENTION", "reduce-vt")
    spec, _ = load_model("tiny-llama-width")
    eng = engine_from_onnx(tiny_exports["tiny-llama-width"], tmp_path / "vt",
                           BuildOptions(kv_mode="portable-static", limits=EngineLimits(4, 16, 32)), progress=False)
    m = eng.manifest
    assert m.values_transposed and "values transposed" in m.kv_layout.description
    io = {t.name: t for t in m.io}
    for i, L in enumerate(spec.layers):
        assert tuple(io[f"past_key_values.{i}.value"].shape)[1:3] == (L.n_kv_heads, L.head_dim)
        assert tuple(io[f"past_key_values.{i}.key"].shape)[1:4:2] == (L.n_kv_heads, L.head_dim)
        assert tuple(io[f"present.{i}.value"].shape)[1:3] == (L.n_kv_heads, L.head_dim)
    decode = m.profiles[1].tensors  # the largest past: max_seq - 1
    assert decode["past_key_values.0.value"]["max"][3] == 31 and decode["past_key_values.0.key"]["max"][2] == 31


def test_the_weights_file_is_written_beside_the_build_and_read_by_safetensors(tmp_path):
    """``weight_file.writing_weights``: a standard safetensors file (safetensors' own loader reads every tensor and
    the format note back), in the order given, its record's sha256 and size those of the file; deferred values are
    made as it writes, each step once, in order, never into the array they were made from (a read-only memory map
    of the export stays untouched, a writable array too); a stopped writer leaves its thread joined."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    from trtllm_kit.engine.weight_file import Deferred, writing_weights
    from trtllm_kit.engine.weights import FORMAT_NOTE, deferred_rows, save_weights
    from trtllm_kit.utils.fs import sha256_file

    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 12)).astype(np.float16)
    np.save(tmp_path / "a.npy", a)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    own = rng.standard_normal((4, 6)).astype(np.float32)
    kept = own.copy()
    twice = Deferred.of(mapped).then(lambda v: v.__imul__(2)).then(lambda v: v.__iadd__(1))
    arrays = {"b.weight": deferred_rows([mapped, mapped[:, :4]], transpose=True), "a.weight": twice,
              "own.weight": Deferred.of(own).then(lambda v: v.__imul__(3)), "plain.weight": a}
    assert twice.shape == (8, 12) and twice.nbytes == a.nbytes and arrays["b.weight"].shape == (16, 8)
    assert np.array_equal(np.asarray(twice), np.asarray(twice))  # each read made anew: no step applied twice
    record = save_weights(arrays, tmp_path)
    path = tmp_path / record.file
    stored = load_file(str(path))
    assert list(stored) == list(arrays)  # in the order given
    np.testing.assert_array_equal(stored["a.weight"], a * np.float16(2) + np.float16(1))
    np.testing.assert_array_equal(stored["b.weight"], np.concatenate([a.T, a[:, :4].T]))
    np.testing.assert_array_equal(stored["own.weight"], kept * 3)
    np.testing.assert_array_equal(stored["plain.weight"], a)
    assert np.array_equal(own, kept) and np.array_equal(np.load(tmp_path / "a.npy"), a)  # sources never written
    assert record.sha256 == sha256_file(path) and record.bytes == path.stat().st_size
    assert record.tensors == {"b.weight": [16, 8], "a.weight": [8, 12], "own.weight": [4, 6], "plain.weight": [8, 12]}
    with safe_open(str(path), "np") as f:
        assert f.metadata() == {"format": FORMAT_NOTE}
    with pytest.raises(FileExistsError):  # never over a file it did not make
        save_weights(arrays, tmp_path)

    with pytest.raises(RuntimeError, match="the build failed"), writing_weights(
            {f"w{i}.weight": deferred_rows([mapped], transpose=True) for i in range(64)}, tmp_path / "x") as writer:
        raise RuntimeError("the build failed")
    assert not any(t.name.startswith("trtllm-kit-weights") for t in __import__("threading").enumerate())
    assert writer._future.done()


def test_a_failed_build_with_weight_inputs_leaves_nothing(tiny_exports, tmp_path, monkeypatch):
    """A build whose TensorRT part fails (no kernel fits a 1 KB workspace) while the weights file is being written
    beside it: one clear error with the fix, the writer stopped, and no engine directory nor anything else left
    behind, not even the parent directories the build made for it (found by a new user). A disk too small for the
    weight inputs is refused before TensorRT starts, leaving nothing either."""
    import shutil
    from collections import namedtuple

    mine = tmp_path / "mine"
    mine.mkdir()  # a directory the user made: kept, though empty
    out = mine / "made" / "by" / "the-build" / "e"
    with pytest.raises(ToolkitError, match="TensorRT build failed") as e:
        engine_from_onnx(tiny_exports["tiny-llama"], out, opts(weights="inputs", workspace_gb=1e-6), progress=False)
    assert "a larger --workspace than 1e-06 GB" in str(e.value.hint)
    assert list(tmp_path.iterdir()) == [mine] and list(mine.iterdir()) == []

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 30, (1 << 30) - 200_000, 200_000))
    with pytest.raises(ToolkitError, match="on a disk with 0.20 MB free; the weight inputs alone need 0.65 MB") as e:
        engine_from_onnx(tiny_exports["tiny-llama"], out, opts(weights="inputs"), progress=False)
    assert "choose another --out" in str(e.value.hint)
    assert list(mine.iterdir()) == []


def test_an_export_whose_weights_file_is_missing_or_short_is_refused(tmp_path):
    """``export.manifest.check_external_data`` (run by every build through ``verify_onnx``): a data file cut short
    or missing is one clear line naming it, before any parsing (a ``--weights inputs`` build, whose parser never
    reads the weights, met a cut-short file only as numpy's "mmap length is greater than file size")."""
    import onnx
    from onnx import helper, numpy_helper

    from trtllm_kit.export.manifest import check_external_data

    w = numpy_helper.from_array(np.arange(64, dtype=np.float16).reshape(8, 8), "w.weight")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w.weight"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, [1, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, [1, 8])], [w])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path), save_as_external_data=True, location="model.onnx.data",
              size_threshold=0)
    data = tmp_path / "model.onnx.data"
    check_external_data(path, "export again")  # whole: nothing to say
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ToolkitError, match=r"model.onnx.data is 100 bytes, its initializers need 128: it was cut"):
        check_external_data(path, "export again")
    data.unlink()
    with pytest.raises(ToolkitError, match=r"model.onnx.data, the weights of model.onnx, is missing"):
        check_external_data(path, "export again")


@pytest.mark.parametrize("mode", ["portable", "portable-static", "inplace"])
def test_weights_parsed_as_graph_inputs_never_reach_the_parser(tiny_exports, mode):
    """``parse_graph(weight_inputs=True)`` (every ``--weights inputs`` build): the weight matrices reach the parser as
    graph inputs, so its network holds no constant of their values, and ``weights_to_inputs`` (fused, out x in, as
    with the GEMM plugin) gives the same inputs, shapes and values as from the parsed constants."""
    from trtllm_kit.engine.builder import _create_network
    from trtllm_kit.engine.flavors import resolve_flavor
    from trtllm_kit.engine.kv_layouts import KV_LAYOUTS
    from trtllm_kit.engine.weights import is_weight_matrix, weights_to_inputs

    flavor = resolve_flavor("auto", None)
    trt = flavor.trt
    layout = KV_LAYOUTS[mode]
    path = tiny_exports["tiny-llama-width"] / "model.onnx"
    made = {}
    for weight_inputs in (False, True):
        logger = trt.Logger(trt.Logger.ERROR)
        network = _create_network(flavor, trt.Builder(logger))
        assert layout.parse(trt.OnnxParser(network, logger), path, SMALL, weight_inputs=weight_inputs)
        constants = [network.get_layer(i) for i in range(network.num_layers)
                     if network.get_layer(i).type == trt.LayerType.CONSTANT]
        weights = [c for c in constants if any(is_weight_matrix(n, tuple(c.get_output(0).shape))
                                               for n in (c.name, c.get_output(0).name))]
        assert bool(weights) != weight_inputs, len(weights)
        arrays = weights_to_inputs(trt, network, path, fuse=True, out_x_in=True)
        inputs = {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}
        assert all(inputs[k] == a.shape for k, a in arrays.items())
        made[weight_inputs] = ({k: np.asarray(a) for k, a in arrays.items()}, inputs)
    assert made[True][1] == made[False][1]  # the same engine inputs
    assert made[True][0].keys() == made[False][0].keys()
    assert all(np.array_equal(made[True][0][k], made[False][0][k]) for k in made[True][0])
