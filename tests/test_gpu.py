"""GPU tests: run on the device machine (`pytest -m gpu`); skipped where CUDA is missing."""

import pytest
import torch

from toolkit.bench.sweep import SweepConfig, bench
from toolkit.pipeline import ensure_export, resolve_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    out = []
    for name in ("tiny-llama", "tiny-llama-width"):
        art = resolve_model(name)
        ensure_export(art, root / name, log=lambda m: None)
        out.append(art)
    return out


def test_eager_and_ort_cuda_agree_and_are_timed(arts, tmp_path):
    import onnxruntime as ort

    backends = ["eager"] + (["ort"] if "CUDAExecutionProvider" in ort.get_available_providers() else [])
    cfg = SweepConfig(batches=[1, 8], inputs=[12], outputs=[16], warmup=1, repeats=2, step_tokens=[16])
    res, _ = bench(arts, backends, cfg, tmp_path / "r.json", device="cuda", progress=False)
    for p in res["points"]:
        assert p["status"] == "ok", p
        assert p["peak_mem_gb"] > 0 and p["decode_step_ms"] > 0
    for c in res["correctness"]:
        assert c["status"] == "ok"
        assert c["first_mismatch"] is None or c["first_mismatch"] >= 8, c  # fp16 ties may flip late tokens only
    assert "ort" in backends, "onnxruntime-gpu is needed for this test"
