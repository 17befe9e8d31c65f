"""Optimization profiles derived from the sweep an engine is built for.

Profiles are stated over the I/O declaration's axis names (batch, sequence, past), and turned into
per-tensor shapes through it, so they always agree with the exported graph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from trtllm_kit.errors import ToolkitError
from trtllm_kit.export.io_spec import BATCH, PAST, SEQ, TOTAL, TensorIO


@dataclass(frozen=True)
class ProfileSpec:
    """One optimization profile: min/opt/max sizes of the batch, sequence and past axes."""

    name: str
    min: dict[str, int]
    opt: dict[str, int]
    max: dict[str, int]

    def shapes(self, io: TensorIO) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        def sizes(d: dict[str, int]) -> dict[str, int]:
            return {**d, TOTAL: d[PAST] + d[SEQ]}
        return io.shape(sizes(self.min)), io.shape(sizes(self.opt)), io.shape(sizes(self.max))

    def covers(self, batch: int, seq: int, past: int) -> bool:
        return all(self.min[a] <= v <= self.max[a] for a, v in ((BATCH, batch), (SEQ, seq), (PAST, past)))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SweepLimits:
    """What the engine must serve: the sweep's maxima and its typical point.

    Attributes:
        max_batch: largest batch. max_input: longest prompt. max_seq: longest prompt + output.
        opt_batch, opt_input: the sweep's typical point, where TensorRT tunes its kernels.
    """

    max_batch: int = 384
    max_input: int = 128
    max_seq: int = 640
    opt_batch: int | None = None
    opt_input: int | None = None

    def checked(self) -> "SweepLimits":
        for flag, v in (("--max-batch", self.max_batch), ("--max-input", self.max_input), ("--max-seq", self.max_seq)):
            if v < 1:
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
        return SweepLimits(self.max_batch, self.max_input, self.max_seq, ob, oi)


def sweep_profiles(limits: SweepLimits, layout: str = "split", inplace: bool = False) -> list[ProfileSpec]:
    """Prefill (past 0) and decode (one token) profiles, or one profile covering both.

    In in-place mode the cache length is static (``max_seq``), so ``past`` does not vary; profiles
    then differ only in the number of new tokens.
    """
    lim = limits.checked()
    ob, oi, ms = lim.opt_batch, lim.opt_input, lim.max_seq
    decode_opt_past = min(ms - 1, oi + 128)
    if inplace:
        prefill = ProfileSpec("prefill", {BATCH: 1, SEQ: 1, PAST: 0}, {BATCH: ob, SEQ: oi, PAST: 0},
                              {BATCH: lim.max_batch, SEQ: lim.max_input, PAST: 0})
        decode = ProfileSpec("decode", {BATCH: 1, SEQ: 1, PAST: 0}, {BATCH: ob, SEQ: 1, PAST: 0},
                             {BATCH: lim.max_batch, SEQ: 1, PAST: 0})
    else:
        prefill = ProfileSpec("prefill", {BATCH: 1, SEQ: 1, PAST: 0}, {BATCH: ob, SEQ: oi, PAST: 0},
                              {BATCH: lim.max_batch, SEQ: lim.max_input, PAST: 0})
        decode = ProfileSpec("decode", {BATCH: 1, SEQ: 1, PAST: 1}, {BATCH: ob, SEQ: 1, PAST: decode_opt_past},
                             {BATCH: lim.max_batch, SEQ: 1, PAST: ms - 1})
    if layout == "split":
        return [prefill, decode]
    if layout == "single":
        past_max = 0 if inplace else ms - 1
        return [ProfileSpec("all", {BATCH: 1, SEQ: 1, PAST: 0}, {BATCH: ob, SEQ: 1, PAST: 0 if inplace else decode_opt_past},
                            {BATCH: lim.max_batch, SEQ: lim.max_input, PAST: past_max})]
    raise ToolkitError(f"unknown --profiles {layout!r}", "choose split (prefill + decode) or single")
