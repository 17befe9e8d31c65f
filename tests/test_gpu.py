"""GPU tests: run on the device machine (`pytest -m gpu`); skipped where CUDA is missing."""

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

    backends = ["eager"] + (["ort"] if "CUDAExecutionProvider" in ort.get_available_providers() else [])
    cfg = SweepConfig(batches=[1, 8], inputs=[12], outputs=[16], warmup=1, repeats=2, step_tokens=[16])
    res = bench(arts, backends, cfg, tmp_path / "r.json", RunOptions("cuda", "fp16"), progress=False)
    for p in res.points:
        assert p.status == "ok", p
        assert p.peak_mem_gb > 0 and p.decode_step_ms > 0
    for c in res.correctness:
        assert c.status == "ok"
        assert c.first_mismatch is None or c.first_mismatch >= 8, c  # fp16 ties may flip late tokens only
    assert "ort" in backends, "onnxruntime-gpu is needed for this test"


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
            out.append((flavor, gpu))
    return out


def test_trt_engines_generate_eager_tokens(arts, tmp_path):
    """Where a TensorRT flavour can run on this GPU (the acceptance run: TensorRT 8.6 on H100/H200),
    build tiny engines in every KV mode it supports and check their greedy tokens against eager."""
    from trtllm_kit.engine.builder import BuildOptions, engine_from_onnx
    from trtllm_kit.runtime.eager import eager_runner
    from trtllm_kit.runtime.trt import TrtRunner

    flavors = _trt_flavors()
    if not flavors:
        pytest.skip("no TensorRT flavour that runs on this GPU is installed")
    ids = torch.randint(3, 320, (4, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    for art in arts:
        with eager_runner(art.spec, art.weights(), "fp16", "cuda") as eager:
            want = eager.generate(ids, mask, 16).tokens.cpu()
        for flavor, _ in flavors:
            for mode in ("portable",) + (("inplace",) if flavor.inplace_kv else ()):
                eng = engine_from_onnx(art.onnx_dir, tmp_path / f"{art.label}-{flavor.name}-{mode}",
                                       BuildOptions(flavor=flavor.name, kv_mode=mode, max_batch=8, max_input=32,
                                                    max_seq=64), progress=False)
                assert eng.metadata["io_source"] == "deserialized engine"
                for graph in (False, True) if mode == "inplace" else (False,):
                    with TrtRunner(eng.out_dir, "cuda", cuda_graph=graph) as runner:
                        res = runner.generate(ids, mask, 16)
                    got = res.tokens.cpu()
                    diff = (got != want).any(0).nonzero()
                    assert len(diff) == 0 or int(diff[0]) >= 8, (flavor.name, mode, graph, got, want)
                    assert len(res.decode_s) == 15


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
