"""The weight-streaming floor: the fastest a batch-1 decode step can be on a GPU.

At batch 1 a decode step reads every weight once, so it cannot take less than
``weight bytes / memory bandwidth`` (shared/PAPER.md: 13.5 GB of fp16 weights at the H200's 4.8 TB/s is
2.8 ms). The KV cache read at batch 1 is small beside the weights and is left out, so the floor is a
lower bound. A step's "% of floor" is floor / measured step: 100% means the engine streams the weights at
the GPU's full datasheet bandwidth.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from trtllm_kit.bench.results import Point
from trtllm_kit.report.data import ReportData

# Peak memory bandwidth, GB/s (1e9 bytes/s), from the vendors' datasheets:
#   H200 (SXM and NVL) 4.8 TB/s: NVIDIA H200 Tensor Core GPU datasheet.
#   H100 SXM 3.35 TB/s, H100 PCIe 2 TB/s: NVIDIA H100 Tensor Core GPU datasheet.
#   A100 80GB SXM 2,039 GB/s, A100 40GB (SXM and PCIe) 1,555 GB/s: NVIDIA A100 Tensor Core GPU datasheet.
#   L40S 864 GB/s: NVIDIA L40S datasheet. L4 300 GB/s: NVIDIA L4 datasheet. A10 600 GB/s: NVIDIA A10 datasheet.
#   GeForce RTX 4090 1,008 GB/s: NVIDIA GeForce RTX 4090 specifications.
#   RTX 6000 Ada Generation 960 GB/s: NVIDIA RTX 6000 Ada Generation datasheet.
#   B200 8 TB/s: NVIDIA HGX B200 / DGX B200 datasheet (per GPU).
# Matched on torch's device name ("NVIDIA H100 80GB HBM3" is the SXM part), first match wins.
BANDWIDTH_GBPS: tuple[tuple[str, str, float], ...] = (
    (r"\bH200\b", "H200", 4800),
    (r"\bH100\b.*\bPCIe\b", "H100 PCIe", 2000),
    (r"\bH100\b.*\b(SXM\d?|HBM3)\b", "H100 SXM", 3350),
    (r"\bA100\b.*\bSXM\d?-80GB\b", "A100 80GB SXM", 2039),
    (r"\bA100\b.*\b40GB\b", "A100 40GB", 1555),
    (r"\bL40S\b", "L40S", 864),
    (r"\bL4\b", "L4", 300),
    (r"\bA10\b", "A10", 600),
    (r"\bRTX 4090\b", "RTX 4090", 1008),
    (r"\bRTX 6000 Ada\b", "RTX 6000 Ada", 960),
    (r"\bB200\b", "B200", 8000),
)
CPU_NOTE = "no weight-streaming floor applies on the CPU"


def bandwidth_of(device_name: str | None) -> tuple[str, float] | None:
    """(GPU, GB/s) for a device name as torch reports it, or None where the table has no such GPU."""
    for pattern, gpu, gbps in BANDWIDTH_GBPS:
        if device_name and re.search(pattern, device_name, re.I):
            return gpu, gbps
    return None


@dataclass(frozen=True)
class FloorRow:
    """One model's batch-1 decode step on one backend and lengths, next to the floor.

    Attributes:
        point: the batch-1 point.
        weight_bytes: the model's weight bytes (None: unknown).
        device_name: the GPU the results file names ("" on the CPU).
        bandwidth: (GPU, GB/s) from ``BANDWIDTH_GBPS``, or None.
        note: why there is no percentage (empty when there is one).
    """

    point: Point
    weight_bytes: int | None
    device_name: str
    bandwidth: tuple[str, float] | None
    note: str = ""

    @property
    def floor_ms(self) -> float | None:
        """Weight bytes / bandwidth, milliseconds."""
        if self.note or not self.bandwidth or not self.weight_bytes:
            return None
        return 1e3 * self.weight_bytes / (self.bandwidth[1] * 1e9)

    @property
    def pct_of_floor(self) -> float | None:
        """Floor / measured decode step, percent (100: the weights stream at the datasheet bandwidth)."""
        step, floor = self.point.decode_step_ms, self.floor_ms
        return 100 * floor / step if floor is not None and step else None


def floor_rows(data: ReportData) -> list[FloorRow]:
    """One row per (model, backend, input, output) that has a batch-1 point, in that order."""
    rows = []
    for src in data.sources:
        name = str(src.results.env.get("device") or "")
        for p in src.results.points:
            if p.batch != 1:
                continue
            facts = data.models.get(p.model)
            wb = facts.weight_bytes if facts else None
            on_gpu = p.device.startswith("cuda")
            bw = bandwidth_of(name) if on_gpu else None
            note = ""
            if not on_gpu:
                note = CPU_NOTE
            elif bw is None:
                note = f"bandwidth unknown for {name or 'this GPU'}"
            elif wb is None:
                note = "weight bytes unknown for this model"
            elif p.status != "ok":
                note = f"not timed: {p.status}" + (f" ({p.message})" if p.message else "")
            rows.append(FloorRow(p, wb, name if on_gpu else "", bw, note))
    rows.sort(key=lambda r: (r.point.model, r.point.backend, r.point.input_len, r.point.output_len))
    return rows


def no_floor(rows: list[FloorRow]) -> str | None:
    """One sentence saying why no row has a floor, to show instead of a table of empty cells; None where one has."""
    if any(r.floor_ms is not None for r in rows):
        return None
    if not rows:
        return "No batch-1 point in these results: no decode step to set against the weight-streaming floor."
    why = Counter(r.note for r in rows)
    if set(why) == {CPU_NOTE}:
        return ("No weight-streaming floor applies: these results' batch-1 points are on the CPU, and the floor is a "
                "GPU's memory bandwidth.")
    return ("No weight-streaming floor could be computed for any batch-1 decode step: "
            + "; ".join(f"{note} ({n} point{'s' if n > 1 else ''})" for note, n in why.items()) + ".")
