"""The tables of every point (the page's last section): the sweep, what was not timed, the speed-up over
eager, the correctness checks and the step sweep. Each has a "file" column where the report merges several
results files."""

from __future__ import annotations

from collections import defaultdict

from trtllm_kit.bench.results import Point
from trtllm_kit.report.compare import OverEager
from trtllm_kit.report.data import ReportData
from trtllm_kit.report.tables import (MEMORY_NOTE, FileOf, Marks, Table, cpu_timed, fmt, mark_note, marked,
                                      status_text, with_file)
from trtllm_kit.report.trust import INVERSION_LIMIT, MARK, StepFlag


def sweep_table(points: list[Point], marks: Marks, file_of: FileOf | None = None) -> Table:
    """Every point of the sweep with its status (and reason), latencies, throughput, memory and flags.

    Args:
        points: every point.
        marks: the flagged points' flags (``flag_marks``), for the note column.
        file_of: add the file column.
    """
    rows = []
    points = sorted(points, key=lambda p: (p.input_len, p.output_len, p.model, p.backend, p.batch))
    for p in points:
        flags = marks.get(id(p))
        rows.append([p.model, p.backend, str(p.input_len), str(p.output_len), str(p.batch),
                     "ok" if p.status == "ok" else status_text(p), fmt(p.latency_mean_s), fmt(p.latency_p50_s),
                     fmt(p.latency_p90_s), fmt(p.throughput_tok_s, 1), fmt(p.ttft_s, 4), fmt(p.decode_step_ms, 2),
                     fmt(p.ms_per_token, 2), fmt(p.peak_mem_gb, 2), f"{MARK} {'; '.join(flags)}" if flags else ""])
    notes = ([MEMORY_NOTE] if cpu_timed(points) else []) + mark_note(rows, "a flagged point")
    header = ["model", "backend", "in", "out", "batch", "status", "latency s (mean)", "p50", "p90", "tokens/s (mean)",
              "TTFT s", "decode step ms", "ms/token", "peak mem GB", "note"]
    return with_file(Table("sweep", "Sweep", header, rows, text=2, text_cols=(5, 14), notes=notes),
                     [file_of(p) for p in points] if file_of else None)


def not_timed_table(data: ReportData) -> Table | None:
    """Why every point, step row or check that was not ok was not, grouped by model, file, backend and reason."""
    reasons: dict[tuple, list[str]] = defaultdict(list)
    for x, where in [(p, f"M{p.batch}") for p in data.points] + [(s, f"step {s.tokens}") for s in data.steps]:
        if x.status != "ok":
            reasons[(x.model, data.file_of(x), x.backend, x.status, x.message or "no reason recorded")].append(where)
    if not reasons:
        return None
    keys = sorted(reasons)
    rows = [[m, b, status, ", ".join(reasons[(m, f, b, status, msg)]), msg] for m, f, b, status, msg in keys]
    return with_file(Table("not-timed", "Not timed", ["model", "backend", "status", "points", "reason"], rows, text=5),
                     [k[1] for k in keys] if data.several else None)


def speedup_table(sp: dict[tuple, dict[int, OverEager]], marks: Marks,
                  file_of: FileOf | None = None) -> Table | None:
    """Speed-up of each backend over eager, by batch.

    Args:
        sp: ``compare.over_eager``.
        marks: the flagged points' flags (``flag_marks``): a speed-up resting on one carries the mark.
        file_of: add the file column.
    """
    if not sp:
        return None
    batches = sorted({b for v in sp.values() for b in v})
    keys = sorted(sp)
    rows = [[k[0], k[1], str(k[2]), str(k[3])]
            + [marked(fmt(sp[k][b].x, 2), sp[k][b].rests_on(marks)) if b in sp[k] else "" for b in batches]
            for k in keys]
    table = Table("speedup-over-eager", "Speed-up over eager (x)",
                  ["model", "backend", "in", "out"] + [f"M{b}" for b in batches], rows, text=2,
                  intro="Eager's median (p50) latency over the backend's at the same model, lengths and batch "
                        "(above 1.00: the backend is faster).", notes=mark_note(rows))
    return with_file(table, [file_of(next(iter(sp[k].values())).point) for k in keys] if file_of else None)


def correctness_table(data: ReportData) -> Table:
    """The 16-token greedy check of every model and backend against eager."""
    rows = []
    for c in data.checks:
        result = (c.message or "") if c.status != "ok" else c.verdict()
        rows.append([c.model, c.backend, c.impl or "", c.status, result, fmt(c.setup_s, 1),
                     "" if c.recompiles is None else str(c.recompiles)])
    return with_file(Table("correctness", "Correctness: greedy tokens vs eager (first 16); setup: load + compile + "
                           "first runs, untimed", ["model", "backend", "implementation", "status", "result", "setup s",
                                                   "compiled graphs"], rows, text=5),
                     [data.file_of(c) for c in data.checks] if data.several else None)


def step_table(data: ReportData, flags: list[StepFlag]) -> Table | None:
    """The step sweep: one decode step of N sequences after ``past`` tokens, jumps in ms/token flagged
    (``trust.step_flags``)."""
    if not data.steps:
        return None
    notes = {id(f.row): f"{MARK} {f.detail}" for f in flags}
    rows = [[s.model, s.backend, str(s.tokens), str(s.past), "ok" if s.status == "ok" else status_text(s),
             fmt(s.step_ms, 2), marked(fmt(s.ms_per_token, 3), id(s) in notes), notes.get(id(s), "")]
            for s in data.steps]
    header = ["model", "backend", "tokens/step", "past", "status", "step ms", "ms/token", "note"]
    jump = (f"{MARK}: ms/token more than {100 * INVERSION_LIMIT:.0f}% above the previous (smaller) tokens per step "
            "of the same model and backend. A step of more tokens should cost no more per token, so one of the two "
            "was disturbed (or a kernel changed at that size): re-run the step sweep on a quieter machine.")
    table = Table("step-sweep", "Step sweep", header, rows, text=2, text_cols=(4, 7), notes=[jump] if flags else [])
    return with_file(table, [data.file_of(s) for s in data.steps] if data.several else None)
