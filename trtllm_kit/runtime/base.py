"""One contract for every backend, and the one generation loop they all run through.

A runner implements ``prefill_impl`` and ``decode_impl`` (and may override ``generate_impl`` when the
backend has its own loop, like transformers' ``generate``). The public ``generate`` is the same for
all backends: greedy, output length forced, every step bracketed by the same timer, so a benchmark
cannot time two backends differently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trtllm_kit.runtime.timing import StepTimer


@dataclass
class GenerationResult:
    """Tokens and timings of one batched generation.

    Attributes:
        tokens: (B, new_tokens) generated ids.
        total_s: whole generation (prefill + decode), device-synchronized.
        prefill_s: time to first token.
        decode_s: each decode step, in order.
    """

    tokens: torch.Tensor
    total_s: float
    prefill_s: float
    decode_s: list[float] = field(default_factory=list)


class Runner:
    """Base runner. Subclasses set ``name`` and implement the ``*_impl`` methods.

    Lifecycle: ``activate()`` loads the model/engine onto the device, ``generate()`` may run many
    times, ``deactivate()`` frees everything.
    """

    name = "base"

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.active = False

    # -- lifecycle ---------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self.active:
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

    # -- the contract ------------------------------------------------------------------------
    def check_point(self, batch: int, prompt_len: int, new_tokens: int) -> None:
        """Raise a ToolkitError if this backend cannot serve the point (e.g. beyond engine profiles)."""

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, new_tokens: int) -> GenerationResult:
        """Greedy generation of exactly ``new_tokens`` tokens (no early stop), timed.

        Args:
            input_ids: (B, S) prompt ids (left-padded where rows differ in length).
            attention_mask: (B, S), 1 for real tokens.
            new_tokens: how many tokens to generate.
        """
        assert self.active, f"{self.name} runner used before activate()"
        assert new_tokens >= 1
        self.check_point(input_ids.shape[0], input_ids.shape[1], new_tokens)
        timer = StepTimer(self.device)
        tokens = self.generate_impl(input_ids.to(self.device), attention_mask.to(self.device), new_tokens, timer)
        total, steps = timer.finish()
        return GenerationResult(tokens, total, steps[0] if steps else total, steps[1:])

    def generate_impl(self, input_ids, attention_mask, new_tokens: int, timer: StepTimer) -> torch.Tensor:
        """The shared loop: prefill, then one decode step per remaining token."""
        B, S = input_ids.shape
        self.reset(B, S + new_tokens)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        timer.start()
        logits = self.prefill_impl(input_ids, positions, attention_mask)  # (B, V)
        out = torch.empty(B, new_tokens, dtype=torch.long, device=self.device)
        out[:, 0] = logits.argmax(-1)
        timer.step()
        mask = torch.cat((attention_mask, torch.ones(B, new_tokens, dtype=attention_mask.dtype,
                                                     device=self.device)), dim=1)
        pos = positions[:, -1:]
        for t in range(1, new_tokens):
            pos = pos + 1
            logits = self.decode_impl(out[:, t - 1:t], pos, mask[:, :S + t], past_len=S + t - 1)
            out[:, t] = logits.argmax(-1)
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
