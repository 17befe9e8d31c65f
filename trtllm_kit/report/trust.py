"""Points whose numbers should not be trusted as they are, and what to do about them.

Two signs of a disturbed measurement:

- **spread**: the 90th-percentile run is well above the median (``SPREAD_LIMIT``): some runs were slowed
  by something else (another process, clocks ramping, the allocator growing).
- **inverted**: a larger batch of the same model, backend and lengths finished faster (``INVERSION_LIMIT``;
  median latencies, as every comparison of the report).
  A batch of 64 does at least the work of a batch of 16, so the smaller batch was disturbed (or the
  larger one got a better kernel; either way the pair cannot be compared as is).

The step sweep has its mirror image: a step of more tokens should cost no more per token, so a row whose
ms/token is above the previous (smaller) token count's by more than ``INVERSION_LIMIT`` is flagged too
(a jump: one of the two was disturbed, or a kernel changed at that size).
"""

from __future__ import annotations

from dataclasses import dataclass

from trtllm_kit.bench.results import Point, StepRow
from trtllm_kit.report.compare import point_key

SPREAD_LIMIT = 0.10  # p90 more than 10% above p50
INVERSION_LIMIT = 0.05  # a larger batch's median (p50) latency more than 5% below this one's
MARK = "⚑"  # marks a flagged point, or a number resting on one, in every table
FEW_RUNS = 10  # fewer timed runs than this make p90 the slowest run or close to it (the paper times 20)

ADVICE = {
    "spread": "re-run with more timed runs per point (--repeats, or sweep.repeats in a recipe; the paper times 20) "
              "on a quieter machine (nothing else running on the GPU or CPU)",
    "inverted": "re-run this series with more timed runs on a quieter machine; until then do not compare these "
                "batch sizes",
}


@dataclass(frozen=True)
class Flag:
    """One reason not to trust one point.

    Attributes:
        point: the flagged point.
        kind: ``spread`` or ``inverted`` (see the module docstring).
        detail: the numbers behind the flag, for the page.
    """

    point: Point
    kind: str
    detail: str

    @property
    def advice(self) -> str:
        runs = self.point.runs
        few = f" (this point has {runs} timed runs)" if runs is not None and runs < FEW_RUNS else ""
        return ADVICE[self.kind] + few


def trust_flags(points: list[Point]) -> list[Flag]:
    """Flags for every ok point that shows a large spread or a latency that falls as the batch grows.

    Returns:
        Flags in (model, backend, input, output, batch) order; a point may carry both kinds.
    """
    ok = [p for p in points if p.status == "ok" and p.latency_p50_s is not None]
    series: dict[tuple, list[Point]] = {}
    for p in ok:
        series.setdefault((p.model, p.backend, p.input_len, p.output_len), []).append(p)
    out = []
    for p in ok:
        p50, p90 = p.latency_p50_s, p.latency_p90_s
        if p50 and p90 and p90 > p50 * (1 + SPREAD_LIMIT):
            out.append(Flag(p, "spread", f"p90 {p90:.3g} s is {100 * (p90 / p50 - 1):.0f}% above p50 {p50:.3g} s"))
        larger = [q for q in series[(p.model, p.backend, p.input_len, p.output_len)] if q.batch > p.batch]
        fastest = min(larger, key=lambda q: q.latency_p50_s, default=None)
        if fastest is not None and fastest.latency_p50_s < p50 * (1 - INVERSION_LIMIT):
            out.append(Flag(p, "inverted", f"batch {p.batch} takes {p50:.3g} s, batch {fastest.batch} only "
                                           f"{fastest.latency_p50_s:.3g} s (p50)"))
    out.sort(key=lambda f: (point_key(f.point), f.kind))
    return out


@dataclass(frozen=True)
class StepFlag:
    """A step-sweep row whose ms/token jumped above the previous (smaller) token count's.

    Attributes:
        row: the flagged row.
        previous: the row of the same model, backend and past before it (fewer tokens per step).
    """

    row: StepRow
    previous: StepRow

    @property
    def detail(self) -> str:
        """The numbers behind the flag, for the page."""
        a, b = self.previous.ms_per_token, self.row.ms_per_token
        return f"ms/token {100 * (b / a - 1):.0f}% above {self.previous.tokens} tokens' ({a:.3g} ms)"


def step_flags(steps: list[StepRow]) -> list[StepFlag]:
    """Flags for every ok step-sweep row whose ms/token is more than ``INVERSION_LIMIT`` above that of the ok row
    with the next smaller token count (same model, backend and past), in the rows' order."""
    series: dict[tuple, list[StepRow]] = {}
    for s in steps:
        if s.status == "ok" and s.ms_per_token:
            series.setdefault((s.model, s.backend, s.past), []).append(s)
    out = []
    for rows in series.values():
        rows = sorted(rows, key=lambda s: s.tokens)
        out += [StepFlag(row, prev) for prev, row in zip(rows, rows[1:])
                if row.ms_per_token > prev.ms_per_token * (1 + INVERSION_LIMIT)]
    order = {id(s): i for i, s in enumerate(steps)}
    return sorted(out, key=lambda f: order[id(f.row)])
