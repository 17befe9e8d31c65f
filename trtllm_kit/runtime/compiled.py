"""``torch.compile`` on a static KV cache: the baseline a user weighs a TensorRT engine against.

gpt-fast's design on the one runner contract: the KV cache is preallocated at its full length and
written in place, so every decode step has the same shapes and addresses; the prompt runs uncompiled
(as transformers' ``generate`` does) and the decode step runs compiled (inductor; CUDA graphs through
``mode="reduce-overhead"`` on CUDA, ``mode="default"`` on the CPU).

- ``HFCompiledRunner`` (dense, depth-pruned): transformers' ``generate`` given a ``StaticCache``, which
  compiles the decode forward itself (its ``CompileConfig``): what ``cache_implementation="static"``
  does on a GPU.
- ``ReferenceCompiledRunner`` (width-pruned, which transformers cannot hold): the toolkit's reference
  module on per-block static buffers, the decode step compiled with ``fullgraph=True``.

Compilation is kept out of the timed runs: the first generation with a new cache (a new batch size or
length) runs once untimed, and its seconds are added to ``first_run_s``; ``compiled_graphs()`` counts
the graphs dynamo built since ``activate``.

Recompiles across a sweep: one cache per (batch, prompt + output length), reused by every run of that
shape, so CUDA graphs replay and never re-record. Shapes compile with torch's default ``dynamic=None``:
the first shape is specialized, the next one recompiles with the sizes that changed made symbolic, and
later batch sizes reuse that graph (batch 1 keeps its own: torch specializes sizes of 1). A sweep at one
(input, output) length thus costs about three graphs per model: the 16-token check, batch 1, and all
other batches together.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import shutil
import time

import torch
import torch.nn.functional as F

from trtllm_kit.errors import ToolkitError
from trtllm_kit.models.spec import ModelSpec
from trtllm_kit.models.weights import WeightSource
from trtllm_kit.runtime.base import Runner
from trtllm_kit.runtime.eager import _StepMarker, forced_length_kwargs, hf_compatible, hf_model_from_weights
from trtllm_kit.runtime.timing import StepTimer, device_sync
from trtllm_kit.utils.dtypes import TORCH_DTYPES


def compile_unavailable(device: str | torch.device) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` here, in one sentence with the fix; None if it can."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported by this Python/torch build (use a Python version your torch supports)"
    kind = torch.device(device).type
    if kind == "cpu":
        compilers = (os.environ.get("CXX"), "g++", "c++", "clang++")
        if not any(shutil.which(c) for c in compilers if c):
            return "torch.compile on the CPU needs a C++ compiler and none was found (install g++: apt-get install g++)"
    elif kind == "cuda" and importlib.util.find_spec("triton") is None:
        return "torch.compile on CUDA needs Triton, which is not installed (pip install the triton your torch names)"
    return None


def compile_mode(device: torch.device) -> str:
    """CUDA graphs on the GPU (``reduce-overhead``, transformers' and gpt-fast's choice); plain inductor on the CPU."""
    return "reduce-overhead" if device.type == "cuda" else "default"


def graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process (the counter behind its ``unique_graphs`` statistic)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class _CompiledRunner(Runner):
    """What both compiled runners share: a spec, weights, a dtype; one static cache and its priming.

    Subclasses implement ``load`` (``self.model`` and the compiled decode step ``self.step``),
    ``new_cache(batch, max_len)`` and the step methods, and may override ``run`` (one generation).
    """

    name = "compiled"
    impl = "compiled"

    def __init__(self, spec: ModelSpec, weights: WeightSource, dtype: str = "fp16", device="cpu"):
        super().__init__(device)
        self.spec, self.weights, self.dtype = spec, weights, TORCH_DTYPES[dtype]
        self.mode = compile_mode(self.device)
        self.shape: tuple[int, int] | None = None  # (batch, max_len) of the cache in use
        self.cache_id = 0  # bumped on every new cache: new addresses, so CUDA graphs record again
        self.primed_id = -1  # the cache id ``generate`` last ran untimed on
        self.graphs_at_start: int | None = None
        self.graphs_total: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def activate_impl(self):
        why = compile_unavailable(self.device)
        if why:
            raise ToolkitError(why)
        # A fresh compiler state per model: graphs of the previous model would count against torch's
        # recompile limit (8 per function), beyond which it silently falls back to eager.
        torch.compiler.reset()
        self.graphs_at_start, self.graphs_total = graphs_compiled(), None
        self.first_run_s, self.shape, self.primed_id = 0.0, None, -1
        self.load()

    def deactivate_impl(self):
        self.graphs_total = self.compiled_graphs()
        self.model = self.step = self.cache = self.shape = None
        torch.compiler.reset()  # frees the CUDA graph memory pools

    def compiled_graphs(self) -> int | None:
        """Graphs dynamo compiled for this runner since ``activate`` (the first one included)."""
        if self.graphs_total is not None or self.graphs_at_start is None:
            return self.graphs_total
        return graphs_compiled() - self.graphs_at_start

    def peak_memory_gb(self):
        """torch's peak allocated memory (weights, static cache, CUDA graph pools), as eager reports it."""
        return torch.cuda.max_memory_allocated(self.device) / 1e9 if self.device.type == "cuda" else None

    # -- the static cache ----------------------------------------------------------------------
    def reset(self, batch, max_len):
        self.use_cache(batch, max_len)

    def use_cache(self, batch: int, max_len: int) -> None:
        """Make the cache for (batch, max_len) current: reuse it (same addresses) or allocate a new one."""
        if self.shape != (batch, max_len):
            self.cache = None  # free the old one first
            self.cache = self.new_cache(batch, max_len)
            self.shape, self.cache_id = (batch, max_len), self.cache_id + 1
        else:
            self.restart_cache()

    def generate_impl(self, input_ids, attention_mask, new_tokens, timer):
        self.use_cache(input_ids.shape[0], input_ids.shape[1] + new_tokens)
        if self.primed_id != self.cache_id:  # compile / record CUDA graphs for this cache, untimed
            t0 = time.perf_counter()
            self.run(input_ids, attention_mask, new_tokens, None)
            device_sync(self.device)
            self.first_run_s += time.perf_counter() - t0
            self.primed_id = self.cache_id
            self.restart_cache()
        return self.run(input_ids, attention_mask, new_tokens, timer)

    # -- for subclasses ------------------------------------------------------------------------
    def load(self) -> None:
        raise NotImplementedError

    def new_cache(self, batch: int, max_len: int):
        raise NotImplementedError

    def restart_cache(self) -> None:
        """A new generation on the current cache."""

    def run(self, input_ids, attention_mask, new_tokens: int, timer: StepTimer | None) -> torch.Tensor:
        """One generation on the current cache; ``timer`` None: untimed. Returns (B, new_tokens)."""
        return self.loop(input_ids, attention_mask, new_tokens, timer)


def _mask_4d(mask: torch.Tensor, first_slot: int, new: int, max_len: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive (B, 1, new, max_len) mask: query i (at cache slot first_slot + i) sees the real tokens up to it.

    Finite, like the reference's: a fully padded query row gets a uniform softmax, never NaN.
    """
    full = F.pad(mask, (0, max_len - mask.shape[1])).bool()  # (B, max_len)
    slots = torch.arange(max_len, device=mask.device)
    causal = slots[None, :] <= (first_slot + torch.arange(new, device=mask.device))[:, None]  # (new, max_len)
    allowed = causal[None, None] & full[:, None, None, :]
    return torch.zeros(allowed.shape, dtype=dtype, device=mask.device).masked_fill_(~allowed, torch.finfo(dtype).min)


class HFCompiledRunner(_CompiledRunner):
    """transformers' ``generate`` on a reused ``StaticCache``, its decode forward compiled by transformers.

    The step methods (the 16-token check, comparisons) run the same model forward on the same cache:
    the prompt uncompiled, each decode step through the same compiled call ``generate`` uses.
    """

    def load(self):
        import transformers

        on_cpu = self.device.type != "cuda"
        if not all(hasattr(transformers, n) for n in ("CompileConfig", "StaticCache")) or (
                on_cpu and not hasattr(transformers.CompileConfig, "_compile_all_devices")):
            raise ToolkitError(f"transformers {transformers.__version__} cannot compile generate's decode step on a "
                               f"static cache{' on the CPU' if on_cpu else ''}", "install transformers >= 5")
        self.model = hf_model_from_weights(self.spec, self.weights, self.dtype, self.device)
        # transformers >= 5.2x calls the KV cache argument `cache` (`past_key_values` before).
        self.cache_kw = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        # transformers' defaults otherwise (fullgraph=False, dynamic=None): what generate does by itself.
        self.compile_config = transformers.CompileConfig(mode=self.mode)
        if on_cpu:
            self.compile_config._compile_all_devices = True  # generate compiles only on accelerators unless told
        self.step = self.model.get_compiled_call(self.compile_config)  # the very callable generate uses
        self.impl = f"transformers.generate + torch.compile ({self.mode}), static cache"

    def new_cache(self, batch, max_len):
        from transformers import StaticCache

        kwargs = {"config": self.model.config, "max_cache_len": max_len}
        if "max_batch_size" in inspect.signature(StaticCache).parameters:  # transformers 4.x allocates eagerly
            kwargs |= {"max_batch_size": batch, "device": self.device, "dtype": self.dtype}
        return StaticCache(**kwargs)

    def restart_cache(self):
        self.cache.reset()

    def run(self, input_ids, attention_mask, new_tokens, timer):
        from transformers import LogitsProcessorList

        procs = LogitsProcessorList([_StepMarker(timer)] if timer else [])
        if timer:
            timer.start()
        with torch.no_grad():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, logits_processor=procs,
                                      compile_config=self.compile_config, **{self.cache_kw: self.cache},
                                      **forced_length_kwargs(new_tokens))
        return out[:, input_ids.shape[1]:]

    def prefill_impl(self, input_ids, position_ids, attention_mask):
        return self._forward(self.model, input_ids, position_ids, attention_mask)

    def decode_impl(self, input_ids, position_ids, attention_mask, past_len):
        return self._forward(self.step, input_ids, position_ids, attention_mask)

    def _forward(self, fn, input_ids, position_ids, attention_mask):
        new = input_ids.shape[1]
        mask = _mask_4d(attention_mask, attention_mask.shape[1] - new, new, self.shape[1], self.dtype)
        with torch.no_grad():
            out = fn(input_ids=input_ids, position_ids=position_ids, attention_mask=mask, use_cache=True,
                     **{self.cache_kw: self.cache})
        return out.logits[:, -1].clone()  # a CUDA graph's output is overwritten by its next replay


class ReferenceCompiledRunner(_CompiledRunner):
    """The reference module (any per-block shapes) on static per-block caches, the decode step compiled.

    Cache: per block, key and value buffers (B, kv_heads_i, max_len, head_dim_i); a step writes its new
    entries at its slot with ``index_copy_`` and attends over every slot, unwritten ones masked out.
    """

    def load(self):
        from trtllm_kit.models.reference import reference_from_weights

        self.model = reference_from_weights(self.spec, self.weights, self.dtype, self.device)
        self.step = torch.compile(self._decode, mode=self.mode, fullgraph=True)
        self.impl = f"toolkit.reference + torch.compile ({self.mode}, fullgraph), static cache"

    def new_cache(self, batch, max_len):
        cache = [tuple(torch.zeros(batch, la.n_kv_heads, max_len, la.head_dim, dtype=self.dtype, device=self.device)
                       for _ in range(2)) for la in self.spec.layers]
        for buf in (b for kv in cache for b in kv):
            torch._dynamo.mark_static_address(buf)  # updated in place: CUDA graphs keep its address
        return cache

    def _full_mask(self, attention_mask):
        return F.pad(attention_mask, (0, self.shape[1] - attention_mask.shape[1]))  # (B, max_len)

    def _decode(self, input_ids, position_ids, attention_mask, slot, cache):
        logits, _ = self.model(input_ids, position_ids, attention_mask, cache, last_only=True, slots=slot)
        return logits[:, -1]

    def prefill_impl(self, input_ids, position_ids, attention_mask):
        S = input_ids.shape[1]
        with torch.no_grad():
            logits, _ = self.model(input_ids, position_ids, self._full_mask(attention_mask), self.cache,
                                   last_only=True, slots=torch.arange(S, device=self.device))
        # The decode slot lives on the device and advances there: no host-to-device copy (and sync) per step.
        self.slot = torch.full((1,), S, dtype=torch.long, device=self.device)
        return logits[:, -1]

    def decode_impl(self, input_ids, position_ids, attention_mask, past_len):
        with torch.no_grad():
            logits = self.step(input_ids, position_ids, self._full_mask(attention_mask), self.slot, self.cache)
        self.slot += 1
        return logits.clone()  # a CUDA graph's output is overwritten by its next replay


def compiled_runner(spec: ModelSpec, weights: WeightSource, dtype: str = "fp16", device="cpu") -> Runner:
    """transformers for what it can hold (dense, depth-pruned), the reference for width-pruned models."""
    cls = HFCompiledRunner if hf_compatible(spec) else ReferenceCompiledRunner
    return cls(spec, weights, dtype, device)
