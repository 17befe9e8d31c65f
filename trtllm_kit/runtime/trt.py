"""TensorRT / TensorRT-RTX runner for engines built by ``trtllm-kit build``.

Device buffers come from torch; every I/O dtype is read from the engine (TensorRT 8.6 turns INT64
inputs into INT32). The engine's KV layout object allocates the cache and says what each step feeds;
this runner binds the same way for every layout. One execution context per profile; the runner picks
the prefill and decode contexts once per generation. Decode steps of the static-cache and portable-static
layouts have fixed shapes and addresses, so they may be captured once per batch size as a CUDA graph and
replayed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from trtllm_kit.engine.kv_layouts import get_layout
from trtllm_kit.engine.limits import select_profile
from trtllm_kit.engine.manifest import EngineManifest
from trtllm_kit.errors import ToolkitError
from trtllm_kit.export.io_spec import LOGITS
from trtllm_kit.runtime.base import Runner

log = logging.getLogger(__name__)

TRT_TO_TORCH = {"float": torch.float32, "half": torch.float16, "bf16": torch.bfloat16, "int32": torch.int32,
                "int64": torch.int64, "bool": torch.bool, "int8": torch.int8}


class TrtRunner(Runner):
    """Runs ``model.engine`` of an engine directory on a CUDA GPU.

    Args:
        engine_dir: written by ``trtllm-kit build``.
        cuda_graph: replay decode steps as CUDA graphs (layouts with fixed decode shapes only: inplace, plugin,
            portable-static; ignored otherwise).
    """

    name = "trt"

    def __init__(self, engine_dir: str | Path, device="cuda", cuda_graph: bool = False):
        from trtllm_kit.engine.weights import check_knobs

        super().__init__(device)
        check_knobs()  # TRTLLM_KIT_GEMV is read by the GEMM plugin when the engine loads
        self.engine_dir = Path(engine_dir)
        self.manifest = EngineManifest.load_engine_dir(self.engine_dir)
        if not (self.engine_dir / "model.engine").is_file():
            raise ToolkitError(f"{self.engine_dir} has no model.engine", EngineManifest.REDO)
        self.spec = self.manifest.spec
        self.layout = get_layout(self.manifest.kv_layout.name)
        self.cuda_graph = cuda_graph and self.layout.fixed_decode_shapes
        if cuda_graph and not self.cuda_graph:
            log.warning("%s: no CUDA graphs for the %s KV layout (its decode shapes change every step); decode steps "
                        "run without them", self.engine_dir, self.layout.name)
        self.profiles = self.manifest.profile_specs()
        m = self.manifest
        past = m.builder_settings.get("past_attention")  # portable-static: how the engine attends over its cache
        self.impl = (f"{m.flavor} {m.trt_version} ({m.kv_layout.name} KV{f', past {past}' if past else ''}"
                     f"{', CUDA graphs' if self.cuda_graph else ''})")
        self.cache = None

    def check_point(self, batch, prompt_len, new_tokens):
        self.manifest.limits.check_point(batch, prompt_len, new_tokens)

    def activate_impl(self):
        from trtllm_kit.engine.loading import check_bindable, load_engine

        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise ToolkitError("TensorRT engines need a CUDA GPU to run, and none was found",
                               "run the trt backend on a GPU machine")
        loaded = load_engine(self.engine_dir, self.manifest)
        self.trt, self.runtime, self.engine = loaded.flavor.trt, loaded.runtime, loaded.engine
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.dtypes = {n: TRT_TO_TORCH[str(self.engine.get_tensor_dtype(n)).split(".")[-1].lower()] for n in names}
        check_bindable(self.trt, self.engine, self.layout.fixed_decode_shapes)
        self.weights = {}
        if self.manifest.weight_inputs is not None:  # built with --weights inputs: bound once, never change
            from trtllm_kit.engine.weights import load_weight_inputs

            self.weights = load_weight_inputs(self.engine_dir, self.manifest.weight_inputs, self.engine, self.device)
        stream = torch.cuda.current_stream().cuda_stream
        self.contexts = []
        self.scratch = scratch = self._shared_scratch()
        for k in range(self.engine.num_optimization_profiles):
            if scratch is None:
                ctx = self.engine.create_execution_context()
            else:  # one scratch buffer for every profile's context: they run one after another on one stream
                ctx = self.engine.create_execution_context_without_device_memory()
                if hasattr(ctx, "set_device_memory"):  # TensorRT >= 10.1
                    ctx.set_device_memory(scratch.data_ptr(), scratch.numel())
                else:
                    ctx.device_memory = scratch.data_ptr()
            if ctx is None:
                raise ToolkitError(f"TensorRT could not create an execution context for {self.engine_dir} (out of "
                                   "GPU memory? see the TensorRT log above)", "free the GPU, or rebuild with smaller "
                                   "--max-batch/--max-input/--max-seq")
            ctx.set_optimization_profile_async(k, stream)
            for name, t in self.weights.items():
                ctx.set_tensor_address(name, t.data_ptr())
            self.contexts.append(ctx)
        self.graphs: dict = {}

    def _shared_scratch(self) -> torch.Tensor | None:
        """The device memory every execution context shares (None: each allocates its own, one profile or an API
        without the choice). TensorRT gives each context the engine's whole activation memory by default, and the
        runner keeps one context per profile: two copies of the largest profile's (H200, TensorRT 8.6, a llama-7b
        portable-static engine built with the cache concatenated: 74 GB each, the second out of memory)."""
        size = getattr(self.engine, "device_memory_size_v2", None) or getattr(self.engine, "device_memory_size", 0)
        if self.engine.num_optimization_profiles < 2 or not size or \
                not hasattr(self.engine, "create_execution_context_without_device_memory"):
            return None
        return torch.empty(size, dtype=torch.uint8, device=self.device)

    def deactivate_impl(self):
        self.graphs.clear()
        self.cache = None
        self.scratch = None
        del self.contexts, self.engine, self.runtime, self.weights

    def reset(self, batch, max_len):
        self.check_point(batch, 1, max_len - 1)
        self.prefill_ctx = None  # chosen at the first step (it depends on the prompt length)
        dt = self.dtypes[next(n for n in self.dtypes if n.startswith("past_key_values."))]
        if self.cache is None or not self.cache.fits(batch, max_len, dt):
            self.graphs.clear()
            self.cache = None
            self.cache = self.layout.new_cache(self.spec, batch, max_len, self.manifest.limits, self.dtypes, self.device,
                                               values_transposed=self.manifest.values_transposed)
            n_logits = 1 if self.manifest.last_only_logits else self.manifest.limits.max_input
            self.logits = torch.empty(batch * n_logits * self.spec.vocab_size, dtype=self.dtypes[LOGITS],
                                      device=self.device)
        self.cache.restart()
        self.decode_ctx = self.contexts[select_profile(self.profiles, batch, 1, self.layout.bound_past(self.cache, 1))]

    def _run(self, ctx, feeds: dict[str, torch.Tensor], new_len: int) -> torch.Tensor:
        B = feeds[next(iter(feeds))].shape[0]
        for name, t in feeds.items():
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        for view in self.cache.views(new_len):
            ctx.set_input_shape(view.past_name, tuple(view.past.shape))
            # An empty past (prefill) has data_ptr() 0, which TensorRT refuses: any valid address will do.
            ctx.set_tensor_address(view.past_name, view.past.data_ptr() or self.logits.data_ptr())
            ctx.set_tensor_address(view.present_name, view.present.data_ptr())
        n_logits = 1 if self.manifest.last_only_logits else new_len
        logits = self.logits[:B * n_logits * self.spec.vocab_size].view(B, n_logits, self.spec.vocab_size)
        ctx.set_tensor_address(LOGITS, logits.data_ptr())
        if not ctx.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise ToolkitError("TensorRT execution failed (see the TensorRT log above)")
        self.cache.advance(new_len)
        return logits[:, -1]

    def prefill_impl(self, input_ids, position_ids, attention_mask):
        B, S = input_ids.shape
        ctx = self.contexts[select_profile(self.profiles, B, S, self.layout.bound_past(self.cache, 0))]
        return self._run(ctx, self.layout.feeds(self.cache, input_ids, position_ids, attention_mask, 0, self.dtypes), S)

    def decode_impl(self, input_ids, position_ids, attention_mask, past_len):
        feeds = self.layout.feeds(self.cache, input_ids, position_ids, attention_mask, past_len, self.dtypes)
        if not self.cuda_graph:
            return self._run(self.decode_ctx, feeds, 1)
        B = input_ids.shape[0]
        if B not in self.graphs:
            # TensorRT allocates lazily on the first run of a shape: run once outside the capture, then
            # capture the same step (the capture records kernels without running them).
            self._run(self.decode_ctx, feeds, 1)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._run(self.decode_ctx, feeds, 1)
            self.graphs[B] = (graph, out)
        graph, out = self.graphs[B]
        graph.replay()
        return out


def step_breakdown(runner: TrtRunner, batch: int, prompt_len: int, steps: int = 32) -> dict:
    """Where a decode step's time goes: the host's work per step against the GPU's.

    Runs one prompt, then ``steps`` decode steps one at a time; for each, ``host_ms`` is the wall time of
    the runner's step call (feeds, shape setting, address binding, enqueue: TensorRT returns once the
    work is queued) and ``gpu_ms`` the CUDA-event time of the step's GPU work alone: a spin kernel queued
    first keeps the GPU busy while the host enqueues, so the events see no host gaps. ``wall_ms`` is
    one step run the normal way (synchronized). When host_ms >= gpu_ms the GPU waits for the host:
    static shapes and CUDA graphs are the fix.

    Returns:
        Medians in milliseconds: ``host_ms``, ``gpu_ms``, and ``wall_ms`` (one step, synchronized).
    """
    import statistics
    import time

    ids = torch.randint(3, runner.spec.vocab_size, (batch, prompt_len), device=runner.device)
    mask = torch.ones_like(ids)
    runner.reset(batch, prompt_len + steps + 1)
    pos = torch.arange(prompt_len, device=runner.device).expand(batch, prompt_len)
    logits = runner.prefill_impl(ids, pos, mask)
    full = torch.ones(batch, prompt_len + steps + 1, dtype=mask.dtype, device=runner.device)
    host, gpu, wall = [], [], []
    tok = logits.argmax(-1, keepdim=True)
    for t in range(steps):
        past = prompt_len + t
        p = torch.full((batch, 1), past, device=runner.device)
        torch.cuda.synchronize()
        if t % 2 == 0:  # normal step: wall time of one synchronized step
            t0 = time.perf_counter()
            logits = runner.decode_impl(tok, p, full[:, :past + 1], past)
            torch.cuda.synchronize()
            wall.append((time.perf_counter() - t0) * 1e3)
        else:  # GPU busy first: host time of the call, then GPU time of the work with no host gaps
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda._sleep(100_000_000)  # ~50 ms of spinning at ~2 GHz, longer than any host step
            start.record()
            t0 = time.perf_counter()
            logits = runner.decode_impl(tok, p, full[:, :past + 1], past)
            host.append((time.perf_counter() - t0) * 1e3)
            end.record()
            torch.cuda.synchronize()
            gpu.append(start.elapsed_time(end))
        tok = logits.argmax(-1, keepdim=True)
    med = statistics.median
    return {"batch": batch, "prompt_len": prompt_len, "steps": steps, "host_ms": med(host), "gpu_ms": med(gpu),
            "wall_ms": med(wall)}
