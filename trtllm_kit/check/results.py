"""What a check found: per-output statistics over every step, or a per-layer table (``--layerwise``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trtllm_kit.errors import ToolkitError

CRITERION = "elementwise: |a - b| <= atol or |a - b| <= rtol * |b|, b the reference"


@dataclass
class OutputStat:
    """One output (or intermediate tensor) compared, worst over the steps compared.

    Attributes:
        name: the ONNX tensor name.
        max_abs_err: max |candidate - reference|.
        max_rel_err: max |candidate - reference| / |reference| (Polygraphy's; large where the reference is ~0).
        passed: every element within tolerance (Polygraphy's elementwise check), shapes equal.
    """

    name: str
    max_abs_err: float
    max_rel_err: float
    passed: bool

    @classmethod
    def of(cls, name: str, result) -> "OutputStat":
        """From Polygraphy's ``OutputCompareResult`` (or the bare ``False`` of a shape mismatch)."""
        if isinstance(result, bool):
            return cls(name, math.inf, math.inf, result)
        return cls(name, float(result.max_absdiff), float(result.max_reldiff), bool(result))

    def worst(self, other: "OutputStat") -> "OutputStat":
        return OutputStat(self.name, max(self.max_abs_err, other.max_abs_err),
                          max(self.max_rel_err, other.max_rel_err), self.passed and other.passed)


def _row(cells, widths) -> str:
    return "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths)).rstrip()


@dataclass
class CheckResult:
    """A candidate against a reference over a prefill and decode steps.

    Attributes:
        candidate, reference: what ran (e.g. ``tensorrt 8.6.1 (portable KV)``, ``onnxrt CPU``).
        steps: the step labels compared (``prefill``, ``decode 1``, ...).
        setup: the inputs, in words. rtol, atol: the tolerances.
        outputs: per output, the worst over the steps.
        notes: anything the reader should know about what was (not) compared.
    """

    candidate: str
    reference: str
    steps: list[str]
    setup: str
    rtol: float
    atol: float
    outputs: dict[str, OutputStat] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, stats: dict[str, OutputStat]) -> None:
        for name, s in stats.items():
            self.outputs[name] = self.outputs[name].worst(s) if name in self.outputs else s

    @property
    def failed(self) -> list[str]:
        return [name for name, s in self.outputs.items() if not s.passed]

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and not self.failed

    def lines(self) -> list[str]:
        """The summary printed after Polygraphy's per-output log: one row per output, worst step."""
        widths = (max(len("output"), *(len(n) for n in self.outputs)), 12, 12, 6)
        out = [f"check: {self.candidate} vs {self.reference}",
               f"inputs: {self.setup}; steps: {', '.join(self.steps)}",
               f"tolerance: rtol {self.rtol:g}, atol {self.atol:g} ({CRITERION})",
               _row(("output", "max abs err", "max rel err", "result"), widths)]
        for s in self.outputs.values():
            out.append(_row((s.name, f"{s.max_abs_err:.4g}", f"{s.max_rel_err:.4g}", "OK" if s.passed else "FAIL"),
                            widths))
        out += [f"note: {n}" for n in self.notes]
        if self.passed:
            out.append(f"check passed: {len(self.outputs)} outputs within tolerance over {len(self.steps)} steps")
        return out

    def raise_if_failed(self) -> None:
        """Raises:
            ToolkitError: ``check failed: <output names>``.
        """
        if not self.passed:
            raise ToolkitError(f"check failed: {', '.join(self.failed) or 'nothing was compared'}",
                               f"{self.candidate} vs {self.reference}, rtol {self.rtol:g}, atol {self.atol:g}")


@dataclass
class LayerRow:
    """One intermediate tensor of the layer-wise comparison (``layer`` None: after the last block)."""

    layer: int | None
    stat: OutputStat


@dataclass
class LayerwiseResult:
    """Intermediate tensors of one prefill step, block by block, against a reference.

    Attributes:
        candidate, reference, setup, rtol, atol, notes: as in ``CheckResult``.
        rows: one per tensor, in graph order.
    """

    candidate: str
    reference: str
    setup: str
    rtol: float
    atol: float
    rows: list[LayerRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def first_bad(self) -> LayerRow | None:
        return next((r for r in self.rows if not r.stat.passed), None)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and self.first_bad is None

    def lines(self) -> list[str]:
        """The per-layer table: layer, tensor, max abs err, max rel err, OK/FAIL; then the verdict."""
        widths = (5, max(len("tensor"), *(len(r.stat.name) for r in self.rows)), 12, 12, 6)
        out = [f"layerwise: {self.candidate} vs {self.reference}", f"inputs: {self.setup}",
               f"tolerance: rtol {self.rtol:g}, atol {self.atol:g} ({CRITERION})",
               _row(("layer", "tensor", "max abs err", "max rel err", "result"), widths)]
        for r in self.rows:
            s = r.stat
            out.append(_row(("-" if r.layer is None else str(r.layer), s.name, f"{s.max_abs_err:.4g}",
                             f"{s.max_rel_err:.4g}", "OK" if s.passed else "FAIL"), widths))
        out += [f"note: {n}" for n in self.notes]
        bad = self.first_bad
        if bad is None:
            out.append(f"layerwise passed: all {len(self.rows)} tensors within tolerance")
        else:
            where = "after the last block" if bad.layer is None else f"layer {bad.layer}"
            out.append(f"first divergence: {where} ({bad.stat.name})")
        return out

    def raise_if_failed(self) -> None:
        """Raises:
            ToolkitError: ``check failed: layer N (tensor) is the first to diverge``.
        """
        bad = self.first_bad
        if bad is not None:
            where = "after the last block" if bad.layer is None else f"layer {bad.layer}"
            failing = [r.stat.name for r in self.rows if not r.stat.passed and r.layer == bad.layer]
            raise ToolkitError(f"check failed: {where} is the first to diverge ({', '.join(failing)})",
                               f"{self.candidate} vs {self.reference}, rtol {self.rtol:g}, atol {self.atol:g}")
        if not self.rows:
            raise ToolkitError("check failed: no intermediate tensor was compared")
