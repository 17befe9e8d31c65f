"""The RMSNorm plugin (``TrtllmKitRMSNorm``) on a GPU with full TensorRT, against transformers' LlamaRMSNorm math.

Run on the device: ``python -m pytest -m gpu tests/test_norm_gpu.py -q -s`` (TRT_INCLUDE_DIR names the TensorRT
headers when they are not next to the module).
"""

from __future__ import annotations

import os

import pytest
import torch

from conftest import full_tensorrt

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

trt = full_tensorrt()  # the plugin needs full TensorRT
needs_trt = pytest.mark.skipif(trt is None, reason="needs full TensorRT (import tensorrt)")


@pytest.fixture(scope="module")
def norm_plugin():
    from trtllm_kit.engine import plugin

    lib = plugin.compile_plugin(trt, include=os.environ.get("TRT_INCLUDE_DIR"), log=print)
    plugin.load_plugin(lib.path, trt, norm=True)
    return plugin


def reference(x, w, eps):
    """transformers' LlamaRMSNorm: float32 statistics, the row rounded to x's type before the scale."""
    xf = x.float()
    normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return w.to(x.dtype) * normed


@needs_trt
@pytest.mark.parametrize("H,w_dtype", [(4096, torch.float32), (4096, torch.float16), (7168, torch.float32), (72, torch.float16)])
def test_norm_matches_eager_math(norm_plugin, H, w_dtype):
    eps = 1e-6
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if major < 10 else 0)
    x_in = network.add_input("x", trt.float16, (-1, -1, H))
    w_in = network.add_input("w", trt.float32 if w_dtype == torch.float32 else trt.float16, (H,))
    layer = norm_plugin.add_rms_norm(trt, network, x_in, w_in, eps, name="rms_norm.0")
    y = layer.get_output(0)
    y.name = "y"
    network.mark_output(y)
    y.dtype = trt.float16
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_tactic_sources(0)  # as the builder: TensorRT 8.6 cannot load CUDA 13's cuBLAS (cublasGetProperty)
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 1, H), (4, 8, H), (16, 64, H))
    profile.set_shape("w", (H,), (H,), (H,))
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    assert blob is not None, "engine build failed (see log above)"
    engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
    context = engine.create_execution_context()
    torch.manual_seed(H)
    for B, S, scale in ((1, 1, 1.0), (16, 1, 30.0), (3, 64, 300.0)):  # 300: squares beyond fp16's range
        x = (torch.randn(B, S, H, device="cuda") * scale).half()
        w = (1 + 0.1 * torch.randn(H, device="cuda")).half().to(w_dtype)  # fp16 values, as 8.6 widens them
        out = torch.full_like(x, float("nan"))
        context.set_input_shape("x", tuple(x.shape))
        for name, t in (("x", x), ("w", w), ("y", out)):
            context.set_tensor_address(name, t.data_ptr())
        assert context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
        torch.cuda.synchronize()
        ref = reference(x, w, eps)
        assert torch.isfinite(out).all(), f"H={H} B={B} S={S} scale={scale}: non-finite output"
        same = (out == ref).float().mean().item()
        worst = (out.float() - ref.float()).abs().max().item()
        print(f"H={H} w={w_dtype} B={B} S={S} x*{scale}: {same:.4%} equal to eager's math, max abs diff {worst:.3g}")
        torch.testing.assert_close(out, ref, rtol=2e-3, atol=2e-3)
        assert same > 0.99
