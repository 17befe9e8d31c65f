"""One contract for every backend, and the one generation loop they all run through.

A runner implements ``prefill_impl`` and ``decode_impl`` (and may override ``generate_impl`` when the
backend has its own loop, like transformers' ``generate``). The public ``generate`` is the same for
all backends: greedy, output length forced, every step bracketed by the same timer, so a benchmark
cannot time two backends differently. ``loop`` is that step sequence with a pluggable choice of the
next token, which is how two runners are compared (``runtime.compare``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from trtllm_kit.runtime.timing import StepTimer


@dataclass
class GenerationResult:
    """Tokens and timings of one batched generation.

    Attributes:
        tokens: (B, new_tokens) generated ids.
        total_s: whole generation (prefill + decode), device-synchronized, seconds.
        prefill_s: time to first token, seconds.
        decode_s: each decode step, in order, seconds.
    """

    tokens: torch.Tensor
    total_s: float
    prefill_s: float
    decode_s: list[float] = field(default_factory=list)


# pick(step, logits (B, V)) -> next tokens (B,); on_logits(step, logits) observes every step's logits.
Pick = Callable[[int, torch.Tensor], torch.Tensor]


def greedy(step: int, logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1)


class Runner:
    """Base runner. Subclasses set ``name`` and ``impl`` and implement the ``*_impl`` methods.

    Lifecycle: ``activate()`` loads the model/engine onto the device, ``generate()`` may run many
    times, ``deactivate()`` frees everything. ``peak_memory_gb()`` reports the peak device memory of
    the last timed point (``reset_peak_memory()`` starts a point). A backend that compiles per shape runs
    a new shape once untimed inside ``generate`` and adds those seconds to ``first_run_s``.
    """

    name = "base"
    impl = "base"

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.active = False
        self.baseline_bytes = 0
        # Seconds of untimed first runs at new shapes (compilation, CUDA-graph capture) since activate.
        self.first_run_s = 0.0

    # -- lifecycle ---------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self.active:
            self.baseline_bytes = device_bytes_used(self.device)
            self.activate_impl()
            self.active = True
        return self

    def deactivate(self) -> None:
        if self.active:
            self.deactivate_impl()
            self.active = False
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def __enter__(self):
        return self.activate()

    def __exit__(self, *exc):
        self.deactivate()

    # -- memory accounting -------------------------------------------------------------------
    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # buffers cached from the previous point do not count against this one
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_gb(self) -> float | None:
        """Peak device memory of the work since ``reset_peak_memory``, GB; None on the CPU.

        Default: torch's peak allocated, or the device memory the process holds beyond what it held
        before this runner was activated (weights + arenas + KV buffers), whichever is larger: ONNX
        Runtime and TensorRT allocate outside torch's allocator.
        """
        if self.device.type != "cuda":
            return None
        return max(torch.cuda.max_memory_allocated(self.device), device_bytes_used(self.device) - self.baseline_bytes) / 1e9

    def compiled_graphs(self) -> int | None:
        """Graphs ``torch.compile`` built for this runner since ``activate``; None: the backend compiles none."""
        return None

    # -- the contract ------------------------------------------------------------------------
    def check_point(self, batch: int, prompt_len: int, new_tokens: int) -> None:
        """Raise a ToolkitError if this backend cannot serve the point (e.g. beyond engine profiles)."""

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, new_tokens: int) -> GenerationResult:
        """Greedy generation of exactly ``new_tokens`` tokens (no early stop), timed.

        Args:
            input_ids: (B, S) prompt ids (left-padded where rows differ in length).
            attention_mask: (B, S), 1 for real tokens.
            new_tokens: how many tokens to generate, >= 1.
        """
        assert self.active, f"{self.name} runner used before activate()"
        assert new_tokens >= 1
        self.check_point(input_ids.shape[0], input_ids.shape[1], new_tokens)
        timer = StepTimer(self.device)
        tokens = self.generate_impl(input_ids.to(self.device), attention_mask.to(self.device), new_tokens, timer)
        total, steps = timer.finish()
        return GenerationResult(tokens, total, steps[0] if steps else total, steps[1:])

    def generate_impl(self, input_ids, attention_mask, new_tokens: int, timer: StepTimer) -> torch.Tensor:
        return self.loop(input_ids, attention_mask, new_tokens, timer)

    def loop(self, input_ids, attention_mask, new_tokens: int, timer: StepTimer | None = None, pick: Pick = greedy,
             on_logits: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
        """The shared loop: prefill, then one decode step per remaining token.

        Args:
            input_ids, attention_mask: (B, S) on this runner's device.
            new_tokens: tokens to produce.
            timer: marks the start and the end of every step (None: untimed).
            pick: chooses the next tokens from a step's logits (greedy by default; a comparison feeds
                both runners one runner's choices).
            on_logits: sees every step's last-position logits (B, V).

        Returns:
            (B, new_tokens) the picked tokens.
        """
        B, S = input_ids.shape
        self.reset(B, S + new_tokens)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        if timer:
            timer.start()
        logits = self.prefill_impl(input_ids, positions, attention_mask)  # (B, V)
        out = torch.empty(B, new_tokens, dtype=torch.long, device=self.device)
        if on_logits:
            on_logits(0, logits)
        out[:, 0] = pick(0, logits)
        if timer:
            timer.step()
        mask = torch.cat((attention_mask, torch.ones(B, new_tokens, dtype=attention_mask.dtype,
                                                     device=self.device)), dim=1)
        pos = positions[:, -1:]
        for t in range(1, new_tokens):
            pos = pos + 1
            logits = self.decode_impl(out[:, t - 1:t], pos, mask[:, :S + t], past_len=S + t - 1)
            if on_logits:
                on_logits(t, logits)
            out[:, t] = pick(t, logits)
            if timer:
                timer.step()
        return out

    # -- for subclasses ----------------------------------------------------------------------
    def activate_impl(self) -> None:
        raise NotImplementedError

    def deactivate_impl(self) -> None:
        pass

    def reset(self, batch: int, max_len: int) -> None:
        """Prepare KV buffers for a generation of ``batch`` sequences up to ``max_len`` tokens."""

    def prefill_impl(self, input_ids, position_ids, attention_mask) -> torch.Tensor:
        """Process the prompt; return last-position logits (B, V)."""
        raise NotImplementedError

    def decode_impl(self, input_ids, position_ids, attention_mask, past_len: int) -> torch.Tensor:
        """One token per sequence (B, 1) after ``past_len`` cached tokens; return logits (B, V)."""
        raise NotImplementedError

    def step_latency(self, batch: int, past_len: int, repeats: int = 5) -> float:
        """Seconds for one decode step of ``batch`` sequences after ``past_len`` tokens (median)."""
        ids = torch.zeros(batch, past_len, dtype=torch.long)
        mask = torch.ones_like(ids)
        times = []
        for _ in range(repeats + 1):
            res = self.generate(ids, mask, 2)
            times.append(res.decode_s[0])
        return sorted(times[1:])[len(times[1:]) // 2]


def device_bytes_used(device: torch.device) -> int:
    """Bytes of device memory in use on ``device`` (all processes); 0 on the CPU."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return 0
    free, total = torch.cuda.mem_get_info(device)
    return total - free
