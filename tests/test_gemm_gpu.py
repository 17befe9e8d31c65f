"""The cuBLASLt GEMM plugin (``TrtllmKitGemm``) on a GPU with full TensorRT, against PyTorch.

Run on the device: ``python -m pytest -m gpu tests/test_gemm_gpu.py -q -s`` (TRT_INCLUDE_DIR names the TensorRT
headers when they are not next to the module). Prints each shape's time and bandwidth (observations, not
assertions).
"""

from __future__ import annotations

import ctypes
import os

import pytest
import torch

from conftest import full_tensorrt

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

trt = full_tensorrt()  # the plugins need full TensorRT
needs_trt = pytest.mark.skipif(trt is None, reason="needs full TensorRT (import tensorrt)")


@pytest.fixture(scope="module")
def gemm_plugin():
    from trtllm_kit.engine import plugin

    lib = plugin.compile_plugin(trt, include=os.environ.get("TRT_INCLUDE_DIR"), log=print, gemm=True)
    plugin.load_plugin(lib.path, trt, gemm=True)
    version = ctypes.CDLL(str(lib.path)).trtllmKitGemmCublasLtVersion
    version.restype = ctypes.c_size_t
    print(f"\nTensorRT {trt.__version__}, {torch.cuda.get_device_name()}, cuBLASLt {version()} ({lib.cublaslt.library})")
    return plugin


class GemmEngine:
    """x (B, S, K) @ w as one plugin layer, both engine inputs, fp16; w (K, N) with ``w_layout`` 0, (N, K) with 1."""

    def __init__(self, plugin, K, N, max_rows, max_seq=8, w_layout=0):
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        major = int(trt.__version__.split(".")[0])
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if major < 10 else 0)
        x = network.add_input("x", trt.float16, (-1, -1, K))
        w_shape = (N, K) if w_layout else (K, N)
        w = network.add_input("w", trt.float16, w_shape)
        layer = plugin.add_gemm(trt, network, x, w, name="gemm.0", w_layout=w_layout)
        assert layer.get_output(0).shape[-1] == N
        y = layer.get_output(0)
        y.name = "y"
        network.mark_output(y)
        y.dtype = trt.float16
        config = builder.create_builder_config()
        if major < 10:
            config.set_tactic_sources(0)
        config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        profile.set_shape("x", (1, 1, K), (max_rows, 1, K), (max_rows, max_seq, K))
        profile.set_shape("w", w_shape, w_shape, w_shape)
        config.add_optimization_profile(profile)
        self.blob = builder.build_serialized_network(network, config)
        assert self.blob is not None, f"engine build failed for K={K} N={N} (see log above)"
        self.logger = logger
        self.load()

    def load(self):
        """(Re)create the engine and context from the plan: the plugin reads TRTLLM_KIT_GEMV when it is created."""
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(self.blob)
        self.context = self.engine.create_execution_context()

    def bind(self, x, w, y):
        self.context.set_input_shape("x", tuple(x.shape))
        for name, t in (("x", x), ("w", w), ("y", y)):
            self.context.set_tensor_address(name, t.data_ptr())

    def launch(self, stream):
        assert self.context.execute_async_v3(stream.cuda_stream), "execute_async_v3 failed (see stderr)"


def _check(tag, y, x, w):
    ref = (x.double().reshape(-1, x.shape[-1]) @ w.double()).reshape(*x.shape[:-1], w.shape[1])
    assert not torch.isnan(y).any(), f"{tag}: NaN in output"
    rel = ((y.double() - ref).norm() / ref.norm()).item()
    assert rel < 2e-3, f"{tag}: rel err {rel:.2e} against fp64 (max abs err {(y.double() - ref).abs().max().item():.3e})"
    return rel


# (K, N): LLaMA-7B's q/o (4096x4096), up/gate (4096x11008), down (11008x4096); LLM-Pruner's unaligned MLP
# width (7156) and an odd N.
SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (4096, 7156), (7156, 4096), (64, 13)]


@needs_trt
@pytest.mark.parametrize("K,N", SHAPES, ids=[f"K{k}-N{n}" for k, n in SHAPES])
def test_gemm_matches_torch_and_replays_in_a_cuda_graph(gemm_plugin, K, N):
    torch.manual_seed(K + N)
    eng = GemmEngine(gemm_plugin, K, N, max_rows=256)
    w = (torch.randn(K, N, device="cuda") / K ** 0.5).half()
    stream = torch.cuda.Stream()
    for B, S in ((1, 1), (16, 1), (3, 7), (256, 1)):
        x = torch.randn(B, S, K, device="cuda").half()
        y = torch.full((B, S, N), float("nan"), dtype=torch.float16, device="cuda")
        eng.bind(x, w, y)
        stream.wait_stream(torch.cuda.current_stream())  # x and y were filled on the current stream
        with torch.cuda.stream(stream):
            eng.launch(stream)
        stream.synchronize()
        rel = _check(f"K={K} N={N} B={B} S={S}", y, x, w)
        if S != 1:
            continue
        # The decode use: captured once, replayed with new values in the same buffers.
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            eng.launch(stream)
        x.copy_(torch.randn_like(x))
        y.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        _check(f"K={K} N={N} B={B} graph replay", y, x, w)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(3):
            graph.replay()
        start.record()
        for _ in range(20):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        ms = start.elapsed_time(end) / 20
        moved = (w.numel() + x.numel() + y.numel()) * 2
        print(f"K={K} N={N} rows={B}: {ms * 1e3:.1f} us, {moved / ms / 1e9:.2f} TB/s, rel err {rel:.1e}")


@needs_trt
def test_gemm_with_unaligned_activations(gemm_plugin):
    """x and y at addresses 2 bytes past an aligned one: the plugin stages them through its workspace."""
    K, N, B = 4096, 1024, 5
    eng = GemmEngine(gemm_plugin, K, N, max_rows=8)
    w = (torch.randn(K, N, device="cuda") / K ** 0.5).half()
    xs = torch.randn(B * K + 1, device="cuda").half()
    ys = torch.full((B * N + 1,), float("nan"), dtype=torch.float16, device="cuda")
    x, y = xs[1:].view(B, 1, K), ys[1:].view(B, 1, N)
    assert x.data_ptr() % 16 == 2 and y.data_ptr() % 16 == 2
    eng.bind(x, w, y)
    stream = torch.cuda.current_stream()
    eng.launch(stream)
    torch.cuda.synchronize()
    print(f"unaligned x and y: rel err {_check('unaligned', y, x, w):.1e}")
    assert torch.isnan(ys[:1]).all(), "the plugin wrote before y"


def _gemv_launches(lib_path) -> int:
    fn = ctypes.CDLL(str(lib_path)).trtllmKitGemvLaunches
    fn.restype = ctypes.c_uint64
    return fn()


def _graph_us(eng, stream, reps=20) -> float:
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        eng.launch(stream)
    for _ in range(3):
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps * 1e3


# (K, N) with the weight stored (N, K): LLaMA-7B's fused q/k/v and gate/up, o, down, LM head; LLM-Pruner's 7156 as
# N (GEMV) and as K (not a multiple of 8: cuBLASLt); a tiny odd N.
SHAPES_OUT_X_IN = [(4096, 4096), (4096, 12288), (4096, 22016), (11008, 4096), (4096, 32000), (4096, 7156),
                   (7156, 4096), (64, 13)]


@needs_trt
@pytest.mark.parametrize("K,N", SHAPES_OUT_X_IN, ids=[f"K{k}-N{n}" for k, n in SHAPES_OUT_X_IN])
def test_gemm_out_x_in_and_its_decode_gemv(gemm_plugin, K, N, monkeypatch):
    """w stored (N, K) (``w_layout`` 1, the builder's default with the plugin): one row runs the plugin's decode
    GEMV where K is a multiple of 8 (counted), more rows and other K cuBLASLt; every case against fp64, plain and
    replayed in a CUDA graph; TRTLLM_KIT_GEMV=0 runs cuBLASLt for the same rows. Prints GEMV and cuBLASLt times."""
    from trtllm_kit.engine import plugin as P

    lib = P.compile_plugin(trt, include=os.environ.get("TRT_INCLUDE_DIR"), log=lambda *a: None, gemm=True).path
    torch.manual_seed(K * 7 + N)
    eng = GemmEngine(gemm_plugin, K, N, max_rows=256, w_layout=1)
    w = (torch.randn(K, N, device="cuda") / K ** 0.5).half()
    w_nk = w.t().contiguous()
    stream = torch.cuda.Stream()
    for B, S in ((1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (16, 1), (3, 7), (256, 1)):
        x = torch.randn(B, S, K, device="cuda").half()
        y = torch.full((B, S, N), float("nan"), dtype=torch.float16, device="cuda")
        times = {}
        for gemv in ("1", "0"):
            monkeypatch.setenv("TRTLLM_KIT_GEMV", gemv)
            eng.load()
            y.fill_(float("nan"))
            eng.bind(x, w_nk, y)
            before = _gemv_launches(lib)
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                eng.launch(stream)
            stream.synchronize()
            ran_gemv = _gemv_launches(lib) > before
            assert ran_gemv == (gemv == "1" and B * S == 1 and K % 8 == 0), (K, N, B, S, gemv)
            rel = _check(f"K={K} N={N} B={B} S={S} gemv={gemv}", y, x, w)
            if S == 1 and B <= 16:
                times[gemv] = _graph_us(eng, stream)
                y.fill_(float("nan"))
                x2 = torch.randn_like(x)
                x.copy_(x2)
                stream.wait_stream(torch.cuda.current_stream())  # x was refilled on the current stream
                eng.launch(stream)  # the graph's replays above wrote y from the old x; check the new one plainly
                stream.synchronize()
                _check(f"K={K} N={N} B={B} after graph gemv={gemv}", y, x, w)
        if times:
            tb = lambda us: (w.numel() * 2) / us / 1e6  # noqa: E731  (weights only: TB/s)
            print(f"K={K} N={N} rows={B}: gemv {times['1']:.1f} us ({tb(times['1']):.2f} TB/s), cuBLASLt "
                  f"{times['0']:.1f} us ({tb(times['0']):.2f} TB/s), rel err {rel:.1e}")


class FoldEngine:
    """One plugin layer with a prologue and/or an epilogue (the residual add, or ``swiglu``: y is N / 2 wide), every
    tensor an engine input (the norm's scale in ``scale_dtype``: TensorRT 8.6 widens fp16 constants to float), fp16
    activations, w stored (N, K)."""

    def __init__(self, plugin, K, N, prologue, residual, scale_dtype=torch.float16, max_rows=256, swiglu=False):
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        major = int(trt.__version__.split(".")[0])
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if major < 10 else 0)
        xk = 2 * K if prologue == "swiglu" else K
        x = network.add_input("x", trt.float16, (-1, -1, xk))
        w = network.add_input("w", trt.float16, (N, K))
        scale = network.add_input("g", trt.float32 if scale_dtype == torch.float32 else trt.float16, (K,)) \
            if prologue == "rms_norm" else None
        res = network.add_input("r", trt.float16, (-1, -1, N)) if residual else None
        layer = plugin.add_gemm(trt, network, x, w, name="gemm.folded", w_layout=1, prologue=prologue, scale=scale,
                                eps=1e-5, residual=res, swiglu=swiglu)
        y = layer.get_output(0)
        y.name = "y"
        network.mark_output(y)
        y.dtype = trt.float16
        config = builder.create_builder_config()
        if major < 10:
            config.set_tactic_sources(0)
        config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        profile.set_shape("x", (1, 1, xk), (max_rows, 1, xk), (max_rows, 8, xk))
        if residual:
            profile.set_shape("r", (1, 1, N), (max_rows, 1, N), (max_rows, 8, N))
        profile.set_shape("w", (N, K), (N, K), (N, K))
        config.add_optimization_profile(profile)
        blob = builder.build_serialized_network(network, config)
        assert blob is not None, f"engine build failed for K={K} N={N} {prologue} (see log above)"
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
        self.context = self.engine.create_execution_context()
        self.names = ["x", "w"] + (["g"] if scale is not None else []) + (["r"] if residual else [])

    def launch(self, stream, tensors):
        for name, t in tensors.items():
            if name in ("x", "r"):
                self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        assert self.context.execute_async_v3(stream.cuda_stream), "execute_async_v3 failed (see stderr)"


def _folded_reference(prologue, x, g, eps=1e-5):
    """x' as eager computes it, every op's result rounded to fp16."""
    if prologue == "rms_norm":
        xf = x.float()
        normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).half()
        return (normed.float() * g.float()).half()
    if prologue == "swiglu":
        K = x.shape[-1] // 2
        return torch.nn.functional.silu(x[..., :K]) * x[..., K:]  # fp16 ops: each rounded, as eager's LlamaMLP
    return x


# (K, N, prologue, residual, scale type, SwiGLU epilogue): llama-7b's fused q/k/v and gate/up after their norms (the
# scale as 8.6 widens it, or in w), o + residual, down with SwiGLU and the residual (the ninth session's fold) or
# plain + residual (after a gate/up with the SwiGLU epilogue); LLM-Pruner's unaligned down (K = 7156: cuBLASLt even at
# one row) and its gate/up (N = 2 x 7156); a tiny odd N.
FOLDS = [(4096, 12288, "rms_norm", False, torch.float32, False), (4096, 22016, "rms_norm", False, torch.float16, False),
         (4096, 4096, "none", True, None, False), (11008, 4096, "swiglu", True, None, False),
         (7156, 4096, "swiglu", True, None, False), (64, 13, "rms_norm", True, torch.float32, False),
         (4096, 12288, "rms_norm_folded", False, None, False), (4096, 22016, "rms_norm_folded", False, None, True),
         (4096, 22016, "rms_norm", False, torch.float32, True), (4096, 14312, "rms_norm_folded", False, None, True),
         (11008, 4096, "none", True, None, False), (64, 13, "rms_norm_folded", True, None, False)]


@needs_trt
@pytest.mark.parametrize("K,N,prologue,residual,scale_dtype,swiglu", FOLDS,
                         ids=[f"K{f[0]}-N{f[1]}-{f[2]}{'-res' if f[3] else ''}{'-swiglu' if f[5] else ''}"
                              for f in FOLDS])
def test_gemm_folds_match_eager_math(gemm_plugin, K, N, prologue, residual, scale_dtype, swiglu, monkeypatch):
    """A multiply with the op before it (RMSNorm, its scale given or already in w, or SwiGLU) and the op after it (the
    residual add, or the fused gate/up multiply's SwiGLU) folded in: one row on the decode GEMV (counted; K a
    multiple of 8), more rows on the prologue kernel + cuBLASLt (beta = 1; SwiGLU after it as one kernel), both
    against eager's ops in fp16 then the product in fp64 (with the scale in w: eager's RMSNorm with the scale, then
    the original w), plain and replayed in a CUDA graph. Prints the GEMV's time."""
    from trtllm_kit.engine import plugin as P

    lib = P.compile_plugin(trt, include=os.environ.get("TRT_INCLUDE_DIR"), log=lambda *a: None, gemm=True).path
    monkeypatch.delenv("TRTLLM_KIT_GEMV", raising=False)
    torch.manual_seed(K + N)
    eng = FoldEngine(gemm_plugin, K, N, prologue, residual, scale_dtype or torch.float16, swiglu=swiglu)
    w = (torch.randn(N, K, device="cuda") / K ** 0.5).half()
    g = (1 + 0.1 * torch.randn(K, device="cuda")).to(scale_dtype or torch.float16) \
        if prologue in ("rms_norm", "rms_norm_folded") else None
    # the engine's weight: with the scale multiplied into its columns (folds.py), rounded once to fp16
    w_in = (w.float() * g.float()[None, :]).half() if prologue == "rms_norm_folded" else w
    stream = torch.cuda.Stream()
    xk = 2 * K if prologue == "swiglu" else K
    ny = N // 2 if swiglu else N
    for B, S in ((1, 1), (16, 1), (3, 7)):
        x = (3 * torch.randn(B, S, xk, device="cuda")).half()
        r = torch.randn(B, S, N, device="cuda").half() if residual else None
        y = torch.full((B, S, ny), float("nan"), dtype=torch.float16, device="cuda")
        feeds = {"x": x, "w": w_in, "y": y, **({"g": g} if prologue == "rms_norm" else {}),
                 **({"r": r} if r is not None else {})}

        def check(tag):
            ref = _folded_reference(prologue.replace("_folded", ""), x, g).double() @ w.double().t()
            if residual:
                ref = ref.half().double() + r.double()
            if swiglu:
                ref = _folded_reference("swiglu", ref.half(), None).double()
            assert not torch.isnan(y).any(), f"{tag}: NaN in output"
            rel = ((y.double() - ref).norm() / ref.norm()).item()
            assert rel < 2e-3, f"{tag}: rel err {rel:.2e} (max abs err {(y.double() - ref).abs().max().item():.3e})"
            return rel

        before = _gemv_launches(lib)
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            eng.launch(stream, feeds)
        stream.synchronize()
        assert (_gemv_launches(lib) > before) == (B * S == 1 and K % 8 == 0), (K, N, B, S)
        rel = check(f"K={K} N={N} {prologue} B={B} S={S}")
        if S != 1:
            continue
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            eng.launch(stream, feeds)
        x.copy_((3 * torch.randn(B, S, xk, device="cuda")).half())
        if r is not None:
            r.copy_(torch.randn_like(r))
        y.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        check(f"K={K} N={N} {prologue} B={B} graph replay")
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(20):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        us = start.elapsed_time(end) / 20 * 1e3
        print(f"K={K} N={N} {prologue}{' + residual' if residual else ''} rows={B}: {us:.1f} us "
              f"({w.numel() * 2 / us / 1e6:.2f} TB/s), rel err {rel:.1e}")


class RopeEngine:
    """One fused q/k/v multiply with the rotary epilogue: x (B, S, K) fp16, w (N, K), cos/sin (B, 1, S, hd) in
    ``table_dtype`` (TensorRT 8.6 widens fp16 tables to float), the RMSNorm with its scale in w or none; outputs q,
    k, v (B, heads, S, hd)."""

    def __init__(self, plugin, K, nh, nkv, hd, prologue, table_dtype, max_rows=16):
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        major = int(trt.__version__.split(".")[0])
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if major < 10 else 0)
        N = (nh + 2 * nkv) * hd
        x = network.add_input("x", trt.float16, (-1, -1, K))
        w = network.add_input("w", trt.float16, (N, K))
        tt = trt.float32 if table_dtype == torch.float32 else trt.float16
        cos, sin = (network.add_input(n, tt, (-1, 1, -1, hd)) for n in ("cos", "sin"))
        layer = plugin.add_gemm(trt, network, x, w, name="gemm.qkv.rope", w_layout=1, prologue=prologue, eps=1e-5,
                                rope=(nh, nkv, hd, hd ** -0.5), cos=cos, sin=sin)
        assert layer.num_outputs == 3
        for o, name in enumerate(("q", "k", "v")):
            t = layer.get_output(o)
            t.name = name
            network.mark_output(t)
            t.dtype = trt.float16
        config = builder.create_builder_config()
        if major < 10:
            config.set_tactic_sources(0)
        config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        profile.set_shape("x", (1, 1, K), (1, 1, K), (max_rows, 8, K))
        for n in ("cos", "sin"):
            profile.set_shape(n, (1, 1, 1, hd), (1, 1, 1, hd), (max_rows, 1, 8, hd))
        profile.set_shape("w", (N, K), (N, K), (N, K))
        config.add_optimization_profile(profile)
        blob = builder.build_serialized_network(network, config)
        assert blob is not None, f"engine build failed for K={K} nh={nh} nkv={nkv} hd={hd} (see log above)"
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
        self.context = self.engine.create_execution_context()

    def launch(self, stream, tensors):
        for name, t in tensors.items():
            if name in ("x", "cos", "sin"):
                self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        assert self.context.execute_async_v3(stream.cuda_stream), "execute_async_v3 failed (see stderr)"


def _rope_reference(y, cos, sin, nh, nkv, hd):
    """q, k, v from the fused multiply's fp16 output y (B, S, N) as the TrtllmKitRotary plugin computes them (every
    op rounded to fp16; q times T(hd ** -0.5))."""
    B, S, _ = y.shape
    heads = y.view(B, S, nh + 2 * nkv, hd).transpose(1, 2)  # (B, heads, S, hd)
    c, s = cos.half().float(), sin.half().float()  # (B, 1, S, hd)
    if cos.dtype == torch.float32:
        c, s = cos, sin

    def rotate(t):
        tf = t.float()
        half = hd // 2
        rot = torch.cat((-tf[..., half:], tf[..., :half]), -1)
        return ((tf * c).half().float() + (rot * s).half().float()).half()

    q = (rotate(heads[:, :nh]).float() * torch.tensor(hd ** -0.5).half().float()).half()
    return q, rotate(heads[:, nh:nh + nkv]), heads[:, nh + nkv:]


# (K, heads, kv heads, head_dim, prologue, table dtype): llama-7b's q/k/v with its norm's scale in w (the tables as
# 8.6 widens them), a GQA block with fp16 tables, a head_dim that is not a multiple of 8 (cuBLASLt + the rotary kernel
# even at one row)
ROPES = [(4096, 32, 32, 128, "rms_norm_folded", torch.float32), (64, 4, 2, 16, "none", torch.float16),
         (48, 3, 1, 12, "none", torch.float32)]


@needs_trt
@pytest.mark.parametrize("K,nh,nkv,hd,prologue,table_dtype", ROPES,
                         ids=[f"K{r[0]}-nh{r[1]}-nkv{r[2]}-hd{r[3]}-{r[4]}" for r in ROPES])
def test_gemm_rotary_epilogue_matches_the_rotary_plugin_math(gemm_plugin, K, nh, nkv, hd, prologue, table_dtype):
    """The fused q/k/v multiply with the rotary epilogue (epilogue 3): one row on the decode GEMV (counted; head_dim
    a multiple of 8: a block's warps rotate a head's row pairs), more rows (and head_dim 12 at one row) on cuBLASLt
    then the rotary kernel; q, k and v against the multiply in fp64 rounded to fp16 then the rotary plugin's ops in
    fp16, plain and (one row) replayed in a CUDA graph."""
    from trtllm_kit.engine import plugin as P

    lib = P.compile_plugin(trt, include=os.environ.get("TRT_INCLUDE_DIR"), log=lambda *a: None, gemm=True).path
    torch.manual_seed(K + hd)
    eng = RopeEngine(gemm_plugin, K, nh, nkv, hd, prologue, table_dtype)
    N = (nh + 2 * nkv) * hd
    w = (torch.randn(N, K, device="cuda") / K ** 0.5).half()
    g = (1 + 0.1 * torch.randn(K, device="cuda")).half()
    w_in = (w.float() * g.float()[None, :]).half() if prologue == "rms_norm_folded" else w
    stream = torch.cuda.Stream()
    for B, S in ((1, 1), (3, 5)):
        x = (3 * torch.randn(B, S, K, device="cuda")).half()
        ang = torch.rand(B, 1, S, hd // 2, device="cuda") * 6.3
        cos = torch.cat((ang.cos(), ang.cos()), -1).to(table_dtype)
        sin = torch.cat((ang.sin(), ang.sin()), -1).to(table_dtype)
        outs = {n: torch.full((B, c, S, hd), float("nan"), dtype=torch.float16, device="cuda")
                for n, c in (("q", nh), ("k", nkv), ("v", nkv))}
        feeds = {"x": x, "w": w_in, "cos": cos, "sin": sin, **outs}

        def check(tag):
            xp = _folded_reference("rms_norm", x, g) if prologue == "rms_norm_folded" else x
            y = (xp.double() @ w.double().t()).half()
            for name, want in zip("qkv", _rope_reference(y, cos, sin, nh, nkv, hd)):
                got = outs[name]
                assert not torch.isnan(got).any(), f"{tag} {name}: NaN in output"
                rel = ((got.double() - want.double()).norm() / want.double().norm()).item()
                assert rel < 3e-3, f"{tag} {name}: rel err {rel:.2e}"

        before = _gemv_launches(lib)
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            eng.launch(stream, feeds)
        stream.synchronize()
        assert (_gemv_launches(lib) > before) == (B * S == 1 and hd % 8 == 0), (K, hd, B, S)
        check(f"K={K} hd={hd} B={B} S={S}")
        if B * S != 1:
            continue
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            eng.launch(stream, feeds)
        x.copy_((3 * torch.randn_like(x.float())).half())
        for t in outs.values():
            t.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        check(f"K={K} hd={hd} graph replay")


@needs_trt
@pytest.mark.parametrize("swiglu_after", [False, True], ids=["swiglu-prologue", "swiglu-epilogue"])
def test_chained_folded_gemvs_wait_for_each_other(gemm_plugin, swiglu_after):
    """A decode MLP as the folds build it, two plugin layers back to back: gate/up = RMSNorm(x) @ w1 (prologue), then
    y = SwiGLU(gate/up) @ w2 + x (prologue and residual); or, as they build it now, gate/up = SwiGLU(RMSNorm(x) @ w1')
    (the norm's scale in w1', SwiGLU its epilogue), then y = that @ w2 + x. On Hopper the second is launched with PDL
    and starts streaming w2 before the first finishes; it must read the first's output only once written: checked
    plainly and over CUDA-graph replays with new x each time, against eager's ops."""
    K, I = 4096, 11008
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if major < 10 else 0)
    x = network.add_input("x", trt.float16, (-1, -1, K))
    w1 = network.add_input("w1", trt.float16, (2 * I, K))
    w2 = network.add_input("w2", trt.float16, (K, I))
    if swiglu_after:
        up = gemm_plugin.add_gemm(trt, network, x, w1, name="gemm.gate_up", w_layout=1, prologue="rms_norm_folded",
                                  eps=1e-5, swiglu=True)
        down = gemm_plugin.add_gemm(trt, network, up.get_output(0), w2, name="gemm.down", w_layout=1, residual=x)
    else:
        g = network.add_input("g", trt.float16, (K,))
        up = gemm_plugin.add_gemm(trt, network, x, w1, name="gemm.gate_up", w_layout=1, prologue="rms_norm", scale=g,
                                  eps=1e-5)
        down = gemm_plugin.add_gemm(trt, network, up.get_output(0), w2, name="gemm.down", w_layout=1,
                                    prologue="swiglu", residual=x)
    y = down.get_output(0)
    y.name = "y"
    network.mark_output(y)
    y.dtype = trt.float16
    config = builder.create_builder_config()
    if major < 10:
        config.set_tactic_sources(0)
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 1, K), (1, 1, K), (4, 4, K))
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    assert blob is not None, "engine build failed (see log above)"
    context = trt.Runtime(logger).deserialize_cuda_engine(blob).create_execution_context()
    torch.manual_seed(7)
    tensors = {"x": (3 * torch.randn(1, 1, K, device="cuda")).half(),
               "w1": (torch.randn(2 * I, K, device="cuda") / K ** 0.5).half(),
               "w2": (torch.randn(K, I, device="cuda") / I ** 0.5).half(),
               "g": (1 + 0.1 * torch.randn(K, device="cuda")).half(),
               "y": torch.full((1, 1, K), float("nan"), dtype=torch.float16, device="cuda")}
    w1 = tensors["w1"]
    if swiglu_after:  # the engine reads w1 with the scale in its columns; the reference the original
        tensors["w1_in"] = (w1.float() * tensors["g"].float()[None, :]).half()
    context.set_input_shape("x", (1, 1, K))
    for name, t in tensors.items():
        if name == "w1_in" or (name == "g" and swiglu_after):  # (g's values are in w1_in there)
            continue
        context.set_tensor_address(name, (tensors["w1_in"] if name == "w1" and swiglu_after else t).data_ptr())

    def check(tag):
        x_, y_ = tensors["x"], tensors["y"]
        h = (_folded_reference("rms_norm", x_, tensors["g"]).double() @ tensors["w1"].double().t()).half()
        ref = (_folded_reference("swiglu", h, None).double() @ tensors["w2"].double().t()).half().double() + x_.double()
        assert not torch.isnan(y_).any(), f"{tag}: NaN in output"
        rel = ((y_.double() - ref).norm() / ref.norm()).item()
        assert rel < 3e-3, f"{tag}: rel err {rel:.2e}"

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    check("plain")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        assert context.execute_async_v3(stream.cuda_stream)
    for step in range(5):
        tensors["x"].copy_((3 * torch.randn(1, 1, K, device="cuda")).half())
        tensors["y"].fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        check(f"graph replay {step}")
