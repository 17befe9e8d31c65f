"""The KV-cache attention plugin on a GPU with full TensorRT, against a PyTorch reference.

Run on the device: ``python -m pytest -m gpu tests/test_plugin_gpu.py -q -s`` (TRT_INCLUDE_DIR names the
TensorRT headers when they are not next to the module). Every failure message carries shapes, errors and
the first mismatching index, so one run is enough to diagnose.
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

M = 32          # max_seq of the correctness engines
PREFILL = 7     # tokens of the first step
SENTINEL = 7.0  # pre-filled into the cache: rows never written must keep it


@pytest.fixture(scope="module")
def loaded():
    from trtllm_kit.engine import plugin

    lib = plugin.compile_plugin(trt, include=os.environ.get("TRT_INCLUDE_DIR"), log=print)
    plugin.load_plugin(lib.path, trt)
    info = ctypes.CDLL(str(lib.path)).trtllmKitPluginInfo
    info.restype = ctypes.c_char_p
    print(f"\nTensorRT {trt.__version__}, {torch.cuda.get_device_name()}, plugin: {info().decode()} ({lib.path})")
    return plugin


TORCH_OF = {}
if trt is not None:
    TORCH_OF = {trt.float16: torch.float16, trt.float32: torch.float32, trt.int32: torch.int32}
    if hasattr(trt, "bfloat16"):
        TORCH_OF[trt.bfloat16] = torch.bfloat16


class Engine:
    """An engine made of one plugin layer, with helpers to run it on torch tensors."""

    def __init__(self, plugin, nh, nkv, hd, max_seq, max_batch, max_new):
        self.nh, self.nkv, self.hd, self.M = nh, nkv, hd, max_seq
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        major = int(trt.__version__.split(".")[0])
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if major < 10 else 0
        network = builder.create_network(flags)
        f16, i32 = trt.float16, trt.int32
        shapes = {"q": (nh, None, hd), "k": (nkv, None, hd), "v": (nkv, None, hd),
                  "k_cache": (nkv, max_seq, hd), "v_cache": (nkv, max_seq, hd)}
        ins = {n: network.add_input(n, f16, (-1, *(-1 if d is None else d for d in s))) for n, s in shapes.items()}
        ins["write_indices"] = network.add_input("write_indices", i32, (-1,))
        ins["attention_mask"] = network.add_input("attention_mask", i32, (-1, max_seq))
        layer = plugin.add_kv_attention(trt, network, *ins.values(), nh, nkv, hd, name="attn.0")
        for i, name in enumerate(("out", "k_cache_out", "v_cache_out")):
            t = layer.get_output(i)
            t.name = name
            network.mark_output(t)
            t.dtype = f16
        config = builder.create_builder_config()
        if int(trt.__version__.split(".")[0]) < 10:  # cuBLAS/cuDNN tactic sources off, as the builder does
            config.set_tactic_sources(0)
        config.set_flag(trt.BuilderFlag.FP16)  # the network is not STRONGLY_TYPED: allow fp16 kernels
        if hasattr(trt, "ProfilingVerbosity"):
            config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        profile = builder.create_optimization_profile()
        for n, s in shapes.items():
            lo = (1, *(1 if d is None else d for d in s))
            hi = (max_batch, *(max_new if d is None else d for d in s))
            profile.set_shape(n, lo, hi, hi)
        profile.set_shape("write_indices", (1,), (max_batch,), (max_batch,))
        profile.set_shape("attention_mask", (1, max_seq), (max_batch, max_seq), (max_batch, max_seq))
        config.add_optimization_profile(profile)
        blob = builder.build_serialized_network(network, config)
        assert blob is not None, f"engine build failed for nh={nh} nkv={nkv} hd={hd} M={max_seq} (see log above)"
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
        assert self.engine is not None
        self.context = self.engine.create_execution_context()
        self.dtypes = {n: TORCH_OF[self.engine.get_tensor_dtype(n)] for n in self.names()}

    def names(self):
        return [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]

    def layers(self) -> str:
        try:
            inspector = self.engine.create_engine_inspector()
            return inspector.get_engine_information(trt.LayerInformationFormat.ONELINE)
        except Exception as e:  # diagnostics only
            return f"(no engine inspector: {e})"

    def bind(self, feeds: dict, outs: dict) -> None:
        """feeds: input name -> tensor; outs: output name -> tensor (may alias an input)."""
        for name, t in feeds.items():
            assert t.dtype == self.dtypes[name], f"{name}: {t.dtype} but the engine wants {self.dtypes[name]}"
            assert t.is_contiguous()
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        for name, t in outs.items():
            assert t.dtype == self.dtypes[name], f"{name}: {t.dtype} but the engine wants {self.dtypes[name]}"
            self.context.set_tensor_address(name, t.data_ptr())

    def launch(self, stream=None) -> None:
        stream = stream or torch.cuda.current_stream()
        ok = self.context.execute_async_v3(stream.cuda_stream)
        assert ok, "execute_async_v3 returned False (the plugin's enqueue failed? see stderr)"

    def run(self, feeds: dict, outs: dict) -> None:
        self.bind(feeds, outs)
        self.launch()


def reference(q, kc, vc, wi, mask):
    """Attention of q (B, nh, S, hd) over caches already holding this step, in fp64 (no TF32 in the way)."""
    B, nh, S, hd = q.shape
    nkv, Mx = kc.shape[1], kc.shape[2]
    G = nh // nkv
    # Slots never written may hold NaN: they are masked, and must not leak through 0 * NaN here either.
    K = kc.double().nan_to_num(0.0).repeat_interleave(G, dim=1)  # (B, nh, M, hd)
    V = vc.double().nan_to_num(0.0).repeat_interleave(G, dim=1)
    scores = q.double() @ K.transpose(-1, -2)  # (B, nh, S, M)
    t = torch.arange(Mx, device=q.device)
    qpos = wi.long()[:, None] + torch.arange(S, device=q.device)[None]  # (B, S)
    allowed = (t[None, None] <= qpos[..., None]) & (mask[:, None, :] != 0)  # (B, S, M)
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    p = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows with no valid key -> zeros
    return p @ V


def write_rows(cache, new, wi):
    """The expected cache after appending new (B, nkv, S, hd) at rows wi[b] + s (< M)."""
    out = cache.clone()
    S, Mx = new.shape[2], cache.shape[2]
    for b, w in enumerate(wi.tolist()):
        s = torch.arange(S, device=new.device)
        keep = (w + s >= 0) & (w + s < Mx)
        out[b, :, (w + s)[keep]] = new[b, :, s[keep]]
    return out


def first_mismatch(a, b) -> str:
    bad = (a.view(torch.int16) != b.view(torch.int16)) if a.dtype == torch.float16 else (a != b)
    if not bad.any():
        return "none"
    idx = tuple(int(i) for i in bad.nonzero()[0])
    return f"{bad.sum().item()} elements differ, first at {idx}: got {a[idx].item()} expected {b[idx].item()}"


def check_out(tag, got, ref, real):
    """real: (B, S) bool, the query positions whose outputs are compared."""
    g = got.float().permute(0, 2, 1, 3)[real]  # (N, nh, hd)
    r = ref.float().permute(0, 2, 1, 3)[real]
    assert not torch.isnan(got).any(), f"{tag}: NaN in output at {tuple(torch.isnan(got).nonzero()[0].tolist())}"
    rel = ((g - r).norm() / r.norm().clamp_min(1e-12)).item()
    diff = (got.float() - ref.float()).abs() * real[:, None, :, None]
    worst = tuple(int(i) for i in (diff == diff.max()).nonzero()[0])
    msg = (f"{tag}: out {tuple(got.shape)} rel err {rel:.2e}, max abs err {diff.max().item():.3e} at "
           f"(b, h, s, d)={worst} got {got[worst].item():.5f} ref {ref[worst].item():.5f}")
    assert rel < 5e-3, msg
    return msg


def check_cache(tag, got, want):
    same = torch.equal(got.view(torch.int16), want.view(torch.int16))
    assert same, f"{tag}: cache {tuple(got.shape)} differs from the expected rows: {first_mismatch(got, want)}"


def run_sequence(plugin, nh, nkv, hd, in_place=True, sentinel=SENTINEL, decode_steps=3, B=3):
    """Prefill of 7 tokens (row b left-padded by 2b) at write index 0, then decode steps at 7, 8, 9."""
    torch.manual_seed(nh * 1000 + nkv * 10 + hd)
    dev = "cuda"
    eng = Engine(plugin, nh, nkv, hd, M, max_batch=B, max_new=8)
    kc = torch.full((B, nkv, M, hd), sentinel, dtype=torch.float16, device=dev)
    vc = torch.full_like(kc, sentinel)
    want_k, want_v = kc.clone(), vc.clone()
    mask = torch.zeros(B, M, dtype=torch.int32, device=dev)
    pad = [2 * b for b in range(B)]
    steps = [(0, PREFILL)] + [(PREFILL + i, 1) for i in range(decode_steps)]
    for step, (w, S) in enumerate(steps):
        tag = f"nh={nh} nkv={nkv} hd={hd} B={B} step {step} (write index {w}, S={S}, {'in place' if in_place else 'distinct cache buffers'})"
        for b in range(B):
            mask[b, max(w, pad[b]):w + S] = 1
        q = torch.randn(B, nh, S, hd, device=dev).div(hd ** 0.5).half()
        k = torch.randn(B, nkv, S, hd, device=dev).half()
        v = torch.randn(B, nkv, S, hd, device=dev).half()
        wi = torch.full((B,), w, dtype=torch.int32, device=dev)
        out = torch.full((B, nh, S, hd), float("nan"), dtype=torch.float16, device=dev)
        feeds = {"q": q, "k": k, "v": v, "k_cache": kc, "v_cache": vc, "write_indices": wi, "attention_mask": mask}
        if in_place:
            kc_out, vc_out = kc, vc
        else:
            kc_out = torch.full_like(kc, float("nan"))
            vc_out = torch.full_like(vc, float("nan"))
            kc_before, vc_before = kc.clone(), vc.clone()
        eng.run(feeds, {"out": out, "k_cache_out": kc_out, "v_cache_out": vc_out})
        torch.cuda.synchronize()
        want_k, want_v = write_rows(want_k, k, wi), write_rows(want_v, v, wi)
        check_cache(tag + " k_cache_out", kc_out, want_k)
        check_cache(tag + " v_cache_out", vc_out, want_v)
        if not in_place:
            check_cache(tag + " k_cache input (must stay untouched)", kc, kc_before)
            check_cache(tag + " v_cache input (must stay untouched)", vc, vc_before)
        ref = reference(q, want_k, want_v, wi, mask)
        real = torch.stack([torch.arange(w, w + S, device=dev) >= pad[b] for b in range(B)])  # (B, S)
        print(check_out(tag, out, ref, real))
        padded = out.permute(0, 2, 1, 3)[~real]
        assert (padded == 0).all(), f"{tag}: padding queries (no valid key) must output zeros, got max {padded.abs().max()}"
        kc, vc = kc_out, vc_out


CASES = [(4, 4, 16), (8, 2, 64), (32, 32, 128), (21, 21, 128)]


@needs_trt
@pytest.mark.parametrize("nh,nkv,hd", CASES, ids=[f"nh{a}-nkv{b}-hd{c}" for a, b, c in CASES])
def test_prefill_then_decode_in_place(loaded, nh, nkv, hd):
    run_sequence(loaded, nh, nkv, hd)


@needs_trt
def test_distinct_cache_buffers_copy_fallback(loaded):
    # NaN in the unwritten rows also checks that masked / future slots never reach the output.
    run_sequence(loaded, 8, 2, 64, in_place=False, sentinel=float("nan"), decode_steps=2)


# Shapes for the other kernel paths: 8 query heads per kv head, more than 8 (two passes), a head dim that
# is not a multiple of 8 (element-pair loads), and a long cache (several score chunks, many key tiles).
LONG = [(32, 4, 128, 2560, 2400), (12, 1, 64, 64, 40), (6, 3, 36, 64, 40), (8, 8, 256, 1100, 1050),
        (16, 2, 250, 2100, 2000)]


@needs_trt
@pytest.mark.parametrize("split", ["auto", "1"], ids=["split-kv-auto", "unsplit"])
@pytest.mark.parametrize("nh,nkv,hd,max_seq,past", LONG, ids=[f"nh{c[0]}-nkv{c[1]}-hd{c[2]}-M{c[3]}" for c in LONG])
def test_existing_cache_decode_and_prefill(loaded, nh, nkv, hd, max_seq, past, split, monkeypatch):
    """Decode and prefill over an existing cache with holes and left padding; decode with split-KV as the plugin
    chooses it (B x kv heads below the SM count: the long caches run 8-16 blocks per kv head, merged) and with
    TRTLLM_KIT_SPLIT_KV=1 (one block per kv head)."""
    if split == "auto":
        monkeypatch.delenv("TRTLLM_KIT_SPLIT_KV", raising=False)
    else:
        monkeypatch.setenv("TRTLLM_KIT_SPLIT_KV", split)
    torch.manual_seed(past + hd)
    dev, B = "cuda", 2
    eng = Engine(loaded, nh, nkv, hd, max_seq, max_batch=B, max_new=5)
    for S in (1, 5):
        tag = f"nh={nh} nkv={nkv} hd={hd} M={max_seq} past={past} S={S}"
        kc = torch.randn(B, nkv, max_seq, hd, device=dev).half()
        vc = torch.randn_like(kc)
        kc[:, :, past:] = float("nan")  # never written yet: must not be read
        vc[:, :, past:] = float("nan")
        mask = torch.zeros(B, max_seq, dtype=torch.int32, device=dev)
        mask[:, :past + S] = 1
        mask[1, : past // 3] = 0  # row 1 left-padded
        mask[0, 5:past:7] = 0     # scattered holes
        q = torch.randn(B, nh, S, hd, device=dev).div(hd ** 0.5).half()
        k = torch.randn(B, nkv, S, hd, device=dev).half()
        v = torch.randn(B, nkv, S, hd, device=dev).half()
        wi = torch.full((B,), past, dtype=torch.int32, device=dev)
        out = torch.empty(B, nh, S, hd, dtype=torch.float16, device=dev)
        want_k, want_v = write_rows(kc, k, wi), write_rows(vc, v, wi)
        eng.run({"q": q, "k": k, "v": v, "k_cache": kc, "v_cache": vc, "write_indices": wi,
                 "attention_mask": mask}, {"out": out, "k_cache_out": kc, "v_cache_out": vc})
        torch.cuda.synchronize()
        check_cache(tag + " k_cache_out", kc, want_k)
        check_cache(tag + " v_cache_out", vc, want_v)
        ref = reference(q, want_k, want_v, wi, mask)
        print(check_out(tag, out, ref, torch.ones(B, S, dtype=torch.bool, device=dev)))


@needs_trt
def test_large_batch_prefill(loaded):
    """B=384, S=512: the grid and index arithmetic at the largest shapes the runtime uses."""
    torch.manual_seed(0)
    dev, B, S, nh, nkv, hd, Mx = "cuda", 384, 512, 2, 1, 64, 576
    eng = Engine(loaded, nh, nkv, hd, Mx, max_batch=B, max_new=S)
    kc = torch.full((B, nkv, Mx, hd), SENTINEL, dtype=torch.float16, device=dev)
    vc = torch.full_like(kc, SENTINEL)
    wi = torch.arange(B, dtype=torch.int32, device=dev) % 64  # rows at different offsets
    mask = torch.zeros(B, Mx, dtype=torch.int32, device=dev)
    for b in range(B):
        mask[b, : int(wi[b]) + S] = 1
    kc[:, :, :64] = torch.randn(B, nkv, 64, hd, device=dev).half()
    vc[:, :, :64] = torch.randn(B, nkv, 64, hd, device=dev).half()
    q = torch.randn(B, nh, S, hd, device=dev).div(hd ** 0.5).half()
    k = torch.randn(B, nkv, S, hd, device=dev).half()
    v = torch.randn(B, nkv, S, hd, device=dev).half()
    out = torch.empty(B, nh, S, hd, dtype=torch.float16, device=dev)
    want_k, want_v = write_rows(kc, k, wi), write_rows(vc, v, wi)
    eng.run({"q": q, "k": k, "v": v, "k_cache": kc, "v_cache": vc, "write_indices": wi, "attention_mask": mask},
            {"out": out, "k_cache_out": kc, "v_cache_out": vc})
    torch.cuda.synchronize()
    tag = f"B={B} S={S} nh={nh} nkv={nkv} hd={hd} M={Mx}"
    check_cache(tag + " k_cache_out", kc, want_k)
    check_cache(tag + " v_cache_out", vc, want_v)
    for lo in range(0, B, 64):  # reference in slices to bound its memory
        sl = slice(lo, lo + 64)
        ref = reference(q[sl], want_k[sl], want_v[sl], wi[sl], mask[sl])
        check_out(f"{tag} rows {lo}..{lo + 63}", out[sl], ref, torch.ones(ref.shape[0], S, dtype=torch.bool, device=dev))


def _time(fn, warmup=10, iters=50) -> float:
    """Median milliseconds of one fn() on the current stream (CUDA events around each call)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


STEPS_PER_GRAPH = 10


def _step_ms(eng: Engine) -> tuple[float, str]:
    """Median milliseconds of one engine launch, with the launches captured in a CUDA graph (which also
    checks that enqueue is capturable) so that Python and launch overhead stay out of the GPU time."""
    eng.launch()  # TensorRT wants one launch outside capture first
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            for _ in range(STEPS_PER_GRAPH):
                eng.launch(stream)
    except Exception as e:  # report and time plain launches instead
        torch.cuda.synchronize()
        print(f"CUDA graph capture of the engine failed ({type(e).__name__}: {e}); timing plain launches")
        return _time(eng.launch), "plain launches"
    return _time(graph.replay) / STEPS_PER_GRAPH, f"CUDA graph of {STEPS_PER_GRAPH} steps"


@needs_trt
def test_decode_step_bandwidth(loaded):
    """Prints the effective bandwidth of one decode step (an observation, not an assertion)."""
    nh = nkv = 32
    hd, past, Mx = 128, 140, 256
    eng = Engine(loaded, nh, nkv, hd, Mx, max_batch=256, max_new=1)
    print("\nengine layers:", eng.layers())
    for B in (1, 256):
        dev = "cuda"
        kc = torch.randn(B, nkv, Mx, hd, device=dev).half()
        vc = torch.randn_like(kc)
        mask = torch.zeros(B, Mx, dtype=torch.int32, device=dev)
        mask[:, : past + 1] = 1
        q = torch.randn(B, nh, 1, hd, device=dev).div(hd ** 0.5).half()
        k = torch.randn(B, nkv, 1, hd, device=dev).half()
        v = torch.randn(B, nkv, 1, hd, device=dev).half()
        wi = torch.full((B,), past, dtype=torch.int32, device=dev)
        out = torch.empty(B, nh, 1, hd, dtype=torch.float16, device=dev)
        feeds = {"q": q, "k": k, "v": v, "k_cache": kc, "v_cache": vc, "write_indices": wi, "attention_mask": mask}
        eng.bind(feeds, {"out": out, "k_cache_out": kc, "v_cache_out": vc})
        ms, how = _step_ms(eng)
        cache_bytes = 2 * B * nkv * (past + 1) * hd * 2  # K and V rows read once
        io_bytes = (q.numel() + k.numel() + v.numel() + out.numel()) * 2 + mask[:, : past + 1].numel() * 4
        print(f"decode B={B} nh=nkv={nh} hd={hd} past={past}: {ms * 1e3:.1f} us/step, "
              f"{(cache_bytes + io_bytes) / ms / 1e6:.0f} GB/s ({(cache_bytes + io_bytes) / 1e6:.1f} MB read; {how})")
        ref = reference(q, kc, vc, wi, mask)
        print(check_out(f"timed decode B={B}", out, ref, torch.ones(B, 1, dtype=torch.bool, device=dev)))
        del kc, vc
    # One prefill timing for scale (batch 16 x 512 new tokens).
    B, S = 16, 512
    kc = torch.zeros(B, nkv, Mx * 2, hd, device="cuda").half()
    eng2 = Engine(loaded, nh, nkv, hd, Mx * 2, max_batch=B, max_new=S)
    feeds = {"q": torch.randn(B, nh, S, hd, device="cuda").div(hd ** 0.5).half(),
             "k": torch.randn(B, nkv, S, hd, device="cuda").half(), "v": torch.randn(B, nkv, S, hd, device="cuda").half(),
             "k_cache": kc, "v_cache": torch.zeros_like(kc), "write_indices": torch.zeros(B, dtype=torch.int32, device="cuda"),
             "attention_mask": torch.ones(B, Mx * 2, dtype=torch.int32, device="cuda")}
    outs = {"out": torch.empty(B, nh, S, hd, dtype=torch.float16, device="cuda"), "k_cache_out": kc,
            "v_cache_out": feeds["v_cache"]}
    eng2.bind(feeds, outs)
    ms = _time(eng2.launch, warmup=3, iters=10)
    flops = 4 * B * nh * hd * S * (S + 1) / 2  # causal QK^T and PV
    print(f"prefill B={B} S={S} nh={nh} hd={hd}: {ms:.2f} ms, {flops / ms / 1e9:.1f} TFLOP/s")
