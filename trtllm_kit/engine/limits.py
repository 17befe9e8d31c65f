"""What an engine must serve (``EngineLimits``) and the optimization profiles that follow from it.

One set of limits serves ``build`` (flags), ``bench``/``run`` (derived from the sweep) and the runner
(profile lookup). Profiles are stated over the I/O declaration's axis names (batch, sequence, past)
and turned into per-tensor shapes through it, so they always agree with the exported graph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from trtllm_kit.errors import ProfileError, ToolkitError
from trtllm_kit.export.io_spec import BATCH, PAST, SEQ, TOTAL, TensorIO

# The paper's grid (shared/PAPER.md): batch <= 384, prompts of 12 or 82 tokens, up to 512 generated.
PAPER_BATCHES = (1, 8, 16, 32, 64, 128, 256, 384)
PAPER_INPUTS = (12, 82)
PAPER_OUTPUTS = (128, 512)


@dataclass(frozen=True)
class EngineLimits:
    """The largest point an engine serves, and the typical point TensorRT tunes for.

    Attributes:
        max_batch: largest batch (``--max-batch``).
        max_input: longest prompt in tokens (``--max-input``).
        max_seq: longest prompt + generated tokens (``--max-seq``).
        opt_batch, opt_input: the typical point; None picks min(16, max_batch) and min(82, max_input).
    """

    max_batch: int
    max_input: int
    max_seq: int
    opt_batch: int | None = None
    opt_input: int | None = None

    def checked(self) -> "EngineLimits":
        """These limits with the opt point filled in.

        Raises:
            ToolkitError: a limit below 1, max_seq not above max_input, or an opt point out of range
                (naming the flag).
        """
        for flag, v in (("--max-batch", self.max_batch), ("--max-input", self.max_input), ("--max-seq", self.max_seq)):
            if not isinstance(v, int) or v < 1:
                raise ToolkitError(f"{flag} {v}: profile max must be at least the minimum, 1")
        if self.max_seq <= self.max_input:
            raise ToolkitError(f"--max-seq {self.max_seq} must exceed --max-input {self.max_input}",
                               "max-seq is prompt + generated tokens")
        ob = self.opt_batch if self.opt_batch is not None else min(16, self.max_batch)
        oi = self.opt_input if self.opt_input is not None else min(82, self.max_input)
        if not 1 <= ob <= self.max_batch:
            raise ToolkitError(f"--opt-batch {ob} lies outside 1..--max-batch {self.max_batch}")
        if not 1 <= oi <= self.max_input:
            raise ToolkitError(f"--opt-input {oi} lies outside 1..--max-input {self.max_input}")
        return replace(self, opt_batch=ob, opt_input=oi)

    def check_point(self, batch: int, prompt_len: int, new_tokens: int) -> None:
        """Raise a ProfileError naming the flag to raise if a generation does not fit these limits."""
        for flag, what, value, limit in (("--max-batch", "batch", batch, self.max_batch),
                                         ("--max-input", "prompt length", prompt_len, self.max_input),
                                         ("--max-seq", "prompt + output length", prompt_len + new_tokens, self.max_seq)):
            if value > limit:
                raise ProfileError(f"{what} {value} exceeds the engine's limit {limit}", f"rebuild with {flag} {value}")

    def to_dict(self) -> dict:
        return asdict(self)


def limits_for_sweep(batches, inputs, outputs, step_tokens=(), step_past: int = 0) -> EngineLimits:
    """The smallest limits that serve a sweep (its grid and its step sweep), tuned at its typical point.

    The opt point is the median batch and the shortest prompt, where most of the sweep's steps run.
    """
    batches, inputs, outputs = sorted(batches), sorted(inputs), sorted(outputs)
    max_batch = max(batches[-1], max(step_tokens, default=1))
    max_input = max(inputs[-1], step_past if step_tokens else 1)
    max_seq = max(inputs[-1] + outputs[-1], step_past + 2 if step_tokens else 2)
    return EngineLimits(max_batch, max_input, max_seq, opt_batch=batches[(len(batches) - 1) // 2],
                        opt_input=inputs[0]).checked()


DEFAULT_LIMITS = limits_for_sweep(PAPER_BATCHES, PAPER_INPUTS, PAPER_OUTPUTS)


@dataclass(frozen=True)
class ProfileSpec:
    """One optimization profile: min/opt/max sizes of the batch, sequence and past axes."""

    name: str
    min: dict[str, int]
    opt: dict[str, int]
    max: dict[str, int]

    def shapes(self, io: TensorIO) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) shapes of one I/O tensor under this profile."""
        def sizes(d: dict[str, int]) -> dict[str, int]:
            return {**d, TOTAL: d[PAST] + d[SEQ]}
        return io.shape(sizes(self.min)), io.shape(sizes(self.opt)), io.shape(sizes(self.max))

    def covers(self, batch: int, seq: int, past: int) -> bool:
        return all(self.min[a] <= v <= self.max[a] for a, v in ((BATCH, batch), (SEQ, seq), (PAST, past)))

    def to_dict(self) -> dict:
        return asdict(self)


def sweep_profiles(limits: EngineLimits, layout: str = "split", static_cache: bool = False) -> list[ProfileSpec]:
    """Prefill (past 0) and decode (one token) profiles, or one profile covering both.

    With a static cache (in-place and plugin KV layouts) the cache length is ``max_seq`` whatever was
    written, so ``past`` does not vary; profiles then differ only in the number of new tokens.

    Raises:
        ToolkitError: an unknown layout.
    """
    lim = limits.checked()
    ob, oi, ms = lim.opt_batch, lim.opt_input, lim.max_seq
    past_opt, past_max = (0, 0) if static_cache else (min(ms - 1, oi + 128), ms - 1)
    prefill = ProfileSpec("prefill", {BATCH: 1, SEQ: 1, PAST: 0}, {BATCH: ob, SEQ: oi, PAST: 0},
                          {BATCH: lim.max_batch, SEQ: lim.max_input, PAST: 0})
    past_min = 0 if static_cache else 1
    decode = ProfileSpec("decode", {BATCH: 1, SEQ: 1, PAST: past_min}, {BATCH: ob, SEQ: 1, PAST: past_opt},
                         {BATCH: lim.max_batch, SEQ: 1, PAST: past_max})
    if layout == "split":
        return [prefill, decode]
    if layout == "single":
        return [ProfileSpec("all", {BATCH: 1, SEQ: 1, PAST: 0}, {BATCH: ob, SEQ: 1, PAST: past_opt},
                            {BATCH: lim.max_batch, SEQ: lim.max_input, PAST: past_max})]
    raise ToolkitError(f"unknown --profiles {layout!r}", "choose split (prefill + decode) or single")


def select_profile(profiles: list[ProfileSpec], batch: int, seq: int, past: int) -> int:
    """Index of the narrowest profile that serves a step of ``seq`` new tokens after ``past`` cached ones
    (fewest new-token sizes, then fewest past sizes; the first of equals).

    With a static cache ``past`` is 0 for every step, so the prefill profile covers a one-token step too;
    the decode profile, tuned for one token, must still be the one that runs it (H200, TensorRT 8.6,
    2026-11-30: the plugin engines' layer profile showed every decode step on the prefill profile).

    Raises:
        ProfileError: no profile covers the step.
    """
    covering = [k for k, p in enumerate(profiles) if p.covers(batch, seq, past)]
    if covering:
        def width(k: int) -> tuple[int, int]:
            p = profiles[k]
            return p.max[SEQ] - p.min[SEQ], p.max[PAST] - p.min[PAST]
        return min(covering, key=width)
    raise ProfileError(f"no engine profile covers batch {batch}, {seq} new tokens after {past}",
                       "rebuild with larger --max-batch/--max-input/--max-seq")
