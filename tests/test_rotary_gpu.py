"""The rotary plugin (``TrtllmKitRotary``) on a GPU with full TensorRT, against transformers' rotary math in fp16.

Run on the device: ``python -m pytest -m gpu tests/test_rotary_gpu.py -q -s`` (TRT_INCLUDE_DIR names the TensorRT
headers when they are not next to the module).
"""

from __future__ import annotations

import os

import pytest
import torch

from conftest import full_tensorrt
from trtllm_kit.models.reference import rotate_half

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

trt = full_tensorrt()  # the plugin needs full TensorRT
needs_trt = pytest.mark.skipif(trt is None, reason="needs full TensorRT (import tensorrt)")


@pytest.fixture(scope="module")
def rope_plugin():
    from trtllm_kit.engine import plugin

    lib = plugin.compile_plugin(trt, include=os.environ.get("TRT_INCLUDE_DIR"), log=print)
    plugin.load_plugin(lib.path, trt, rope=True)
    return plugin


def reference(lin, cos, sin, n, hd, scale=None):
    """The export's (and eager's) rotary: heads split off, every op in lin's type; q then times T(scale)."""
    B, S, _ = lin.shape
    x = lin.view(B, S, n, hd).transpose(1, 2)  # (B, n, S, hd)
    y = x * cos + rotate_half(x) * sin
    return y * torch.tensor(scale, dtype=lin.dtype, device=lin.device) if scale is not None else y


@needs_trt
@pytest.mark.parametrize("nh,nkv,hd,table", [(32, 32, 128, torch.float16), (21, 21, 128, torch.float32),
                                             (8, 2, 64, torch.float16)])  # dense, LLM-Pruner's 21 heads, GQA
def test_rotary_matches_eager_math(rope_plugin, nh, nkv, hd, table):
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if major < 10 else 0)
    q_in = network.add_input("q_lin", trt.float16, (-1, -1, nh * hd))
    k_in = network.add_input("k_lin", trt.float16, (-1, -1, nkv * hd))
    ttype = trt.float16 if table == torch.float16 else trt.float32
    cos_in = network.add_input("cos", ttype, (-1, 1, -1, hd))
    sin_in = network.add_input("sin", ttype, (-1, 1, -1, hd))
    scale = hd ** -0.5
    layer = rope_plugin.add_rotary(trt, network, q_in, k_in, cos_in, sin_in, nh, nkv, hd, scale, name="rotary.0")
    for i, name in enumerate(("q", "k")):
        out = layer.get_output(i)
        out.name = name
        network.mark_output(out)
        out.dtype = trt.float16
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_tactic_sources(0)  # as the builder: TensorRT 8.6 cannot load CUDA 13's cuBLAS
    profile = builder.create_optimization_profile()
    for name, width in (("q_lin", nh * hd), ("k_lin", nkv * hd)):
        profile.set_shape(name, (1, 1, width), (4, 8, width), (16, 64, width))
    for name in ("cos", "sin"):
        profile.set_shape(name, (1, 1, 1, hd), (4, 1, 8, hd), (16, 1, 64, hd))
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    assert blob is not None, "engine build failed (see log above)"
    engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
    context = engine.create_execution_context()
    torch.manual_seed(hd + nh)
    for B, S in ((1, 1), (16, 1), (3, 64)):
        q_lin = torch.randn(B, S, nh * hd, device="cuda").half()
        k_lin = torch.randn(B, S, nkv * hd, device="cuda").half()
        pos = torch.randint(0, 4096, (B, S), device="cuda")
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, device="cuda").float() / hd))
        ang = torch.cat([pos[..., None].float() * inv] * 2, -1)  # (B, S, hd), as transformers builds it
        cos, sin = ang.cos().half()[:, None], ang.sin().half()[:, None]  # (B, 1, S, hd): fp16 tables, as exported
        q = torch.full((B, nh, S, hd), float("nan"), dtype=torch.float16, device="cuda")
        k = torch.full((B, nkv, S, hd), float("nan"), dtype=torch.float16, device="cuda")
        feeds = {"q_lin": q_lin, "k_lin": k_lin, "cos": cos.to(table).contiguous(), "sin": sin.to(table).contiguous(),
                 "q": q, "k": k}
        for name in ("q_lin", "k_lin", "cos", "sin"):
            context.set_input_shape(name, tuple(feeds[name].shape))
        for name, t in feeds.items():
            context.set_tensor_address(name, t.data_ptr())
        assert context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
        torch.cuda.synchronize()
        for got, want, what in ((q, reference(q_lin, cos, sin, nh, hd, scale), "q"),
                                (k, reference(k_lin, cos, sin, nkv, hd), "k")):
            assert torch.isfinite(got).all(), f"{what}: unwritten or non-finite output"
            same = (got == want).float().mean().item()
            print(f"nh={nh} nkv={nkv} hd={hd} tables {table} B={B} S={S} {what}: {same:.4%} equal to eager's math")
            torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)
            assert same > 0.99


@needs_trt
@pytest.mark.parametrize("nh,nkv,hd", [(32, 32, 128), (21, 21, 128), (8, 2, 64)])
def test_rotary_splits_fused_qkv(rope_plugin, nh, nkv, hd):
    """``fused_qkv``: one (B, S, (nh + 2 nkv) hd) input, [q | k | v]; q and k rotated as the split inputs are, v split
    off into (B, nkv, S, hd) unchanged (what the exporter's reshape and transpose make of it)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if major < 10 else 0)
    width = (nh + 2 * nkv) * hd
    qkv_in = network.add_input("qkv", trt.float16, (-1, -1, width))
    cos_in = network.add_input("cos", trt.float32, (-1, 1, -1, hd))
    sin_in = network.add_input("sin", trt.float32, (-1, 1, -1, hd))
    scale = hd ** -0.5
    layer = rope_plugin.add_rotary(trt, network, qkv_in, None, cos_in, sin_in, nh, nkv, hd, scale, name="rotary.0")
    assert layer.num_outputs == 3
    for i, name in enumerate(("q", "k", "v")):
        out = layer.get_output(i)
        out.name = name
        network.mark_output(out)
        out.dtype = trt.float16
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_tactic_sources(0)
    profile = builder.create_optimization_profile()
    profile.set_shape("qkv", (1, 1, width), (4, 8, width), (16, 64, width))
    for name in ("cos", "sin"):
        profile.set_shape(name, (1, 1, 1, hd), (4, 1, 8, hd), (16, 1, 64, hd))
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    assert blob is not None, "engine build failed (see log above)"
    context = trt.Runtime(logger).deserialize_cuda_engine(blob).create_execution_context()
    torch.manual_seed(hd + nh + 1)
    for B, S in ((1, 1), (16, 1), (3, 64)):
        qkv = torch.randn(B, S, width, device="cuda").half()
        pos = torch.randint(0, 4096, (B, S), device="cuda")
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, device="cuda").float() / hd))
        ang = torch.cat([pos[..., None].float() * inv] * 2, -1)
        cos, sin = ang.cos().half()[:, None], ang.sin().half()[:, None]
        outs = {n: torch.full((B, c, S, hd), float("nan"), dtype=torch.float16, device="cuda")
                for n, c in (("q", nh), ("k", nkv), ("v", nkv))}
        feeds = {"qkv": qkv, "cos": cos.float().contiguous(), "sin": sin.float().contiguous(), **outs}
        for name in ("qkv", "cos", "sin"):
            context.set_input_shape(name, tuple(feeds[name].shape))
        for name, t in feeds.items():
            context.set_tensor_address(name, t.data_ptr())
        assert context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
        torch.cuda.synchronize()
        q_lin, k_lin, v_lin = qkv.split([nh * hd, nkv * hd, nkv * hd], -1)
        torch.testing.assert_close(outs["q"], reference(q_lin, cos, sin, nh, hd, scale), rtol=2e-3, atol=2e-3)
        torch.testing.assert_close(outs["k"], reference(k_lin, cos, sin, nkv, hd), rtol=2e-3, atol=2e-3)
        assert torch.equal(outs["v"], v_lin.reshape(B, S, nkv, hd).transpose(1, 2)), "v is not qkv's last part"
        print(f"fused qkv nh={nh} nkv={nkv} hd={hd} B={B} S={S}: q, k match eager's math, v split exactly")
