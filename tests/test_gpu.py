"""GPU tests: run on the device machine (`pytest -m gpu`); skipped where CUDA is missing."""

import os

import pytest
import torch

from trtllm_kit.bench.backends import RunOptions
from trtllm_kit.bench.results import SweepConfig
from trtllm_kit.bench.sweep import bench
from trtllm_kit.pipeline import ensure_export, resolve_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    out = []
    for name in ("tiny-llama", "tiny-llama-width"):
        art = resolve_model(name)
        ensure_export(art, root / name, progress=False)
        out.append(art)
    return out


def test_eager_and_ort_cuda_agree_and_are_timed(arts, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed (pip install 'trtllm-kit[gpu]')")
    backends = ["eager", "ort"]
    cfg = SweepConfig(batches=[1, 8], inputs=[12], outputs=[16], warmup=1, repeats=2, step_tokens=[16])
    res = bench(arts, backends, cfg, tmp_path / "r.json", RunOptions("cuda", "fp16"), progress=False)
    for p in res.points:
        assert p.status == "ok", p
        assert p.peak_mem_gb > 0 and p.decode_step_ms > 0
    for c in res.correctness:
        assert c.status == "ok"
        assert c.first_mismatch is None or c.first_mismatch >= 8, c  # fp16 ties may flip late tokens only


def _trt_flavors():
    from trtllm_kit.engine.flavors import detect_gpu, load_flavor

    gpu = detect_gpu()
    out = []
    for name in ("tensorrt", "tensorrt-rtx"):
        try:
            flavor = load_flavor(name)
        except Exception:  # noqa: BLE001 - not installed
            continue
        if gpu is not None and flavor.runs_on(gpu):
            out.append(flavor)
    return out


def _layouts(flavor):
    """Every KV layout this flavour can build here (the plugin needs nvcc and TensorRT headers)."""
    from trtllm_kit.engine.kv_layouts import KV_LAYOUTS
    from trtllm_kit.engine.limits import EngineLimits
    from trtllm_kit.engine.manifest import BuildOptions

    probe = BuildOptions(flavor=flavor.name, limits=EngineLimits(8, 32, 64))
    return [name for name, layout in KV_LAYOUTS.items() if layout.unavailable(flavor, probe) is None]


def _build(onnx_dir, out, flavor, mode, weights="engine", norm="auto", rope="auto"):
    from trtllm_kit.engine.builder import engine_from_onnx
    from trtllm_kit.engine.limits import EngineLimits
    from trtllm_kit.engine.manifest import BuildOptions

    return engine_from_onnx(onnx_dir, out, BuildOptions(flavor=flavor.name, kv_mode=mode, weights=weights, norm=norm,
                                                        rope=rope, limits=EngineLimits(8, 32, 64)), progress=False)


def _first_mismatch(got, want):
    diff = (got != want).any(0).nonzero()
    return int(diff[0]) if len(diff) else None


@pytest.mark.parametrize("mode", ["portable", "inplace", "plugin", "portable/weights-inputs", "plugin/weights-inputs",
                                  "portable+norm/weights-inputs", "portable-static",
                                  "portable-static+norm/weights-inputs", "portable-static+norm+rope/weights-inputs"])
@pytest.mark.parametrize("model", ["tiny-llama", "tiny-llama-depth", "tiny-llama-width"])
def test_trt_engines_generate_eager_tokens(model, mode, tmp_path):
    """Where a TensorRT flavour can run on this GPU (the acceptance run: TensorRT 8.6 on H100/H200),
    build the tiny dense, depth- and width-pruned engines in each KV layout it supports (and with the
    weights as engine inputs, ``--weights inputs``) and check their greedy tokens against eager, and that
    engine.json's I/O is what the deserialized engine says.
    One test per (model, layout), so that they can run side by side (`-k`) and each says what it proves."""
    from trtllm_kit.engine.kv_layouts import get_layout
    from trtllm_kit.runtime.eager import eager_runner
    from trtllm_kit.runtime.trt import TrtRunner

    mode, _, weights = mode.partition("/weights-")
    mode, _, extras = mode.partition("+")  # +norm: the RMSNorm plugin, +rope: the rotary plugin (portable layouts)
    norm, rope = ("norm" in extras.split("+")), ("rope" in extras.split("+"))
    flavors = [f for f in _trt_flavors() if mode in _layouts(f) and (not extras or "plugin" in _layouts(f))]
    if not flavors:
        pytest.skip(f"no TensorRT flavour that runs on this GPU builds the {mode} KV layout here")
    art = resolve_model(model)
    ensure_export(art, tmp_path / "onnx", progress=False)
    ids = torch.randint(3, 320, (4, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # a left-padded row
    with eager_runner(art.spec, art.weights(), "fp16", "cuda") as eager:
        want = eager.generate(ids, mask, 16).tokens.cpu()
    for flavor in flavors:
        eng = _build(art.onnx_dir, tmp_path / f"{flavor.name}-{mode}", flavor, mode, weights or "engine",
                     norm="plugin" if norm else "auto", rope="plugin" if rope else "auto")
        assert eng.manifest.norm_used == ("plugin" if norm or mode == "plugin" else "trt")
        assert eng.manifest.io_source == "deserialized engine"
        if mode == "portable-static":  # the past's attention form asked (TRTLLM_KIT_PAST_ATTENTION) is the one built
            from trtllm_kit.engine.kv_layouts import past_attention

            assert eng.manifest.builder_settings["past_attention"] == past_attention()
        if weights:  # every projection, the embeddings and the head: 7 per block + 2 (+ 1 if tied), some of them
            from trtllm_kit.engine.weights import FUSED_SEP  # fused side by side with the GEMM plugin

            n = 7 * art.spec.num_layers + (1 if art.spec.tie_word_embeddings else 2)
            tensors = eng.manifest.weight_inputs.tensors
            assert sum(len(k.split(FUSED_SEP)) for k in tensors) == n
            groups = {"on": 2, "qkv": 1, "off": 0}[eng.manifest.weight_choices()[0]]  # q+k+v, gate+up
            assert sum(FUSED_SEP in k for k in tensors) == groups * art.spec.num_layers
            settings = eng.manifest.builder_settings
            if eng.manifest.gemm_used == "plugin":  # folding is the GEMM plugin's default (TRTLLM_KIT_FOLD unset)
                assert settings.get("op_folding") == ("off" if os.environ.get("TRTLLM_KIT_FOLD") == "0" else "on")
            if settings.get("op_folding") == "on" and groups == 2:  # every block's small ops into the plugins
                L = art.spec.num_layers
                folded = {k[len("folded_"):]: v for k, v in settings.items() if k.startswith("folded_")}
                adds = sum((not b.o_bias) + (not b.down_bias) for b in art.spec.layers)  # not past a bias add
                assert folded["swiglu"] == L and folded["residual"] == adds, folded
                assert eng.manifest.rope_used == ("plugin" if rope or mode == "plugin" else "trt")
                if eng.manifest.rope_used == "plugin":  # the rotary plugin splits q/k/v
                    assert folded["rotary_qkv"] == L, folded
                    if all(b.head_dim % 8 == 0 for b in art.spec.layers):  # the rotary into the q/k/v multiply
                        assert folded["rotary_gemm"] == L, folded
                assert folded["rms_norm"] in (2 * L, 2 * L + 1), folded  # + the final norm where the head is a GEMM
                if settings.get("norm_scale_in_weights") == "on":  # every block's two norms' scales in the weights
                    assert folded["norm_scale_in_weights"] >= 2 * L, folded
        for graph in (False, True) if get_layout(eng.manifest.kv_layout.name).fixed_decode_shapes else (False,):
            with TrtRunner(eng.out_dir, "cuda", cuda_graph=graph) as runner:
                engine = runner.engine
                names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
                assert names == {t.name for t in eng.manifest.io}
                for t in eng.manifest.io:
                    assert list(engine.get_tensor_shape(t.name)) == t.shape
                    assert str(engine.get_tensor_dtype(t.name)).split(".")[-1].lower() == t.dtype
                caches = {str(engine.get_tensor_dtype(t.name)) for t in eng.manifest.io
                          if t.name.startswith(("past_key_values.", "present."))}
                assert caches == {"DataType.HALF"}, caches  # an fp16 export: past and present alike
                assert engine.num_optimization_profiles == len(eng.manifest.profiles)
                res = runner.generate(ids, mask, 16)
                if mode == "portable-static":  # a shorter generation reuses the cache (and graph) of this one
                    short = runner.generate(ids, mask, 10).tokens.cpu()
                    assert _first_mismatch(short, res.tokens.cpu()[:, :10]) is None, (short, res.tokens)
                if weights:  # the engine computes with the bound weights, not with copies of its own
                    runner.weights["lm_head.weight"].neg_()
                    flipped = runner.generate(ids, mask, 16).tokens.cpu()
                    runner.weights["lm_head.weight"].neg_()
                    assert _first_mismatch(flipped, want) == 0, "negating lm_head.weight changed nothing"
            first = _first_mismatch(res.tokens.cpu(), want)
            print(f"{model} {flavor.name} {flavor.version} {mode} weights={weights or 'engine'} graph={graph} "
                  f"({eng.manifest.build_seconds:.0f} s build, {eng.manifest.builder_settings}): first mismatch {first}")
            assert first is None or first >= 8, (flavor.name, mode, graph, res.tokens, want)
            assert len(res.decode_s) == 15


@pytest.mark.parametrize("scale,finite", [(12, True), (50, False)])
def test_fp16_engine_with_large_activations(tmp_path, scale, finite):
    """MLP weights x12 (|hidden| ~1400: squares overflow fp16, values do not): the engine, whose RMSNorm
    divides by the row's max first, still matches eager. x50 (the residual itself overflows fp16): a
    clear error naming the precision to use, never silent garbage."""
    from conftest import save_hf_llama
    from trtllm_kit.bench.sweep import check_tokens
    from trtllm_kit.errors import ToolkitError
    from trtllm_kit.export import onnx_from_model
    from trtllm_kit.models import load_model
    from trtllm_kit.runtime.eager import eager_runner
    from trtllm_kit.runtime.trt import TrtRunner

    flavors = _trt_flavors()
    if not flavors:
        pytest.skip("no TensorRT flavour that runs on this GPU is installed")
    ckpt = save_hf_llama(tmp_path / "ckpt", scale_mlp=scale)
    exp = onnx_from_model(str(ckpt), tmp_path / "exp", validate=False, progress=False).out_dir
    spec, weights = load_model(str(ckpt))
    with eager_runner(spec, weights, "fp32", "cuda") as eager:
        _, want = check_tokens(eager, spec, None, 0)
    for flavor in flavors:
        eng = _build(exp, tmp_path / f"eng-{flavor.name}", flavor, "portable")
        with TrtRunner(eng.out_dir, "cuda") as runner:
            if finite:
                _, got = check_tokens(runner, spec, want, 0)
                first = _first_mismatch(got, want)
                print(f"x{scale} {flavor.name}: first mismatch {first}")
                assert first is None or first >= 8
            else:
                with pytest.raises(ToolkitError, match="--dtype bf16, or --dtype fp32"):
                    check_tokens(runner, spec, want, 0)


def test_compiled_backend_matches_eager_and_replays_cuda_graphs(arts, tmp_path):
    """torch.compile with reduce-overhead: eager's tokens, no compile inside a timed run, and faster than eager
    where eager is bound by kernel launches (a tiny model at batch 1)."""
    cfg = SweepConfig(batches=[1, 8], inputs=[12], outputs=[16], warmup=1, repeats=2)
    res = bench(arts, ["eager", "compiled"], cfg, tmp_path / "r.json", RunOptions("cuda", "fp16"), progress=False)
    assert all(p.status == "ok" for p in res.points), res.points
    steps = {(p.model, p.backend, p.batch): p.decode_step_ms for p in res.points}
    for c in res.correctness:
        assert c.status == "ok" and (c.first_mismatch is None or c.first_mismatch >= 8), c
        assert c.setup_s > 0
        if c.backend == "compiled":
            assert "reduce-overhead" in c.impl
            assert 1 <= c.recompiles <= 3, c  # the check, batch 1, batch 8
            assert steps[(c.model, "compiled", 1)] < steps[(c.model, "eager", 1)], steps
