"""The report's tables of models and comparisons (pruned vs dense, the floor, the flags), built from the typed
results, and the ``Table`` every table of the page is (``point_tables`` has those of every point).

A ``Table`` knows which of its columns hold text (left-aligned) and which hold numbers (right-aligned),
and carries the notes that say why a cell is empty. Where the report merges several results files, every
table of models or points has a "file" column after the model's (``file_of``: the item's file name).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from trtllm_kit.bench.results import Point, StepRow
from trtllm_kit.report.compare import Family, Versus, median_throughput, not_compared, point_key, pruning_kind
from trtllm_kit.report.data import ModelFacts
from trtllm_kit.report.floor import FloorRow
from trtllm_kit.report.trust import INVERSION_LIMIT, MARK, SPREAD_LIMIT, Flag
from trtllm_kit.utils.units import size

FLAG_NAMES = {"spread": "large spread", "inverted": "latency falls as batch grows"}

MEMORY_NOTE = ("peak memory is GPU memory (torch's peak allocated, or the device memory the process holds for ONNX "
               "Runtime and TensorRT): it is not measured on the CPU, so that column is empty there")


@dataclass
class Table:
    """One table of the page.

    Attributes:
        id: the HTML id (and what tests look for).
        title: its heading.
        header: column names.
        rows: cells, already formatted.
        text: how many leading columns hold text (left-aligned); the rest are numbers, except ``text_cols``.
        text_cols: further text columns by index (e.g. a trailing note).
        intro: a sentence above the table.
        notes: sentences below it (why cells are empty, what a flag means).
    """

    id: str
    title: str
    header: list[str]
    rows: list[list[str]]
    text: int = 1
    text_cols: tuple[int, ...] = ()
    intro: str = ""
    notes: list[str] = field(default_factory=list)

    def is_text(self, col: int) -> bool:
        return col < self.text or col in self.text_cols


FileOf = Callable[[object], str]
Marks = dict[int, list[str]]  # id of a flagged point -> the names of its flags (``flag_marks``)


def flag_marks(flags: list[Flag]) -> Marks:
    """The names of every flagged point's flags, by the point's id."""
    out: Marks = defaultdict(list)
    for f in flags:
        out[id(f.point)].append(FLAG_NAMES[f.kind])
    return dict(out)


def marked(cell: str, flagged: bool) -> str:
    """``cell`` followed by the flag mark where it rests on a flagged point (an empty cell stays empty)."""
    return f"{cell} {MARK}" if flagged and cell else cell


def mark_note(rows: list[list[str]], what: str = "it rests on a flagged point") -> list[str]:
    """The footnote for the mark, where some cell of ``rows`` carries it."""
    return [f"{MARK}: {what}; see 'Can I trust the numbers?'."] if any(MARK in c for r in rows for c in r) else []


def with_file(t: Table, files: list[str] | None) -> Table:
    """``t`` with a "file" column after its first (the model), one file name per row; ``t`` as is for None."""
    if files is None:
        return t
    t.header.insert(1, "file")
    for row, name in zip(t.rows, files, strict=True):
        row.insert(1, name)
    t.text += 1
    t.text_cols = tuple(c + 1 for c in t.text_cols)
    return t


def fmt(v, nd: int = 3) -> str:
    """A number for a cell: ``nd`` decimals below 1000, thousands separators above; "" for None."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{nd}f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def times(v: float | None) -> str:
    """A speed-up for a cell: "1.23x"; "" for None."""
    return "" if v is None else f"{v:.2f}x"


def status_text(p: Point | StepRow) -> str:
    """A status with its reason: "error: RuntimeError: ..."."""
    return p.status + (f": {p.message}" if p.message else "")


def _pair_file(v: Versus, file_of: FileOf) -> str:
    """The pruned point's file, and the dense point's where that is another."""
    mine, dense = file_of(v.pruned), file_of(v.dense)
    return mine if mine == dense else f"{mine}; dense: {dense}"


def cpu_timed(points: list[Point]) -> bool:
    """Some point was timed off the GPU (its peak memory is not measured)."""
    return any(p.status == "ok" and not p.device.startswith("cuda") for p in points)


def models_table(models: dict[str, ModelFacts], fams: list[Family], several: bool = False) -> Table:
    """Every model: family, role, parameters (and share of the dense parent's), blocks, weight bytes, shapes.

    Args:
        models: the models by label.
        fams: their families (``compare.families``).
        several: the report merges several files (add the file column).
    """
    role, dense_of = {}, {}
    for f in fams:
        for m in f.members:
            dense_of[m] = f.dense
            if m == f.dense:
                role[m] = "dense parent"
            elif f.dense is None:
                role[m] = f.alone
            else:
                role[m] = f"{pruning_kind(models[m], models[f.dense])}-pruned from {f.dense}"
    rows, files = [], []
    for m in sorted(models.values(), key=lambda m: (m.family or "~", -m.params)):
        files.append(m.file)
        dense = models.get(dense_of.get(m.label) or "")
        share = f"{100 * m.params / dense.params:.1f}%" if dense else ""
        rows.append([m.label, m.family or "unknown", role.get(m.label, "family unknown"), f"{m.params / 1e6:,.2f}M",
                     share, str(m.blocks), size(m.weight_bytes), m.shape_text(), m.origin])
    table = Table("models", "Models", ["model", "family (from the spec)", "role", "parameters", "of dense", "blocks",
                                       "weights", "blocks' shapes", "facts from"], rows, text=3, text_cols=(7, 8),
                  intro="A family is the models sharing hidden size, vocabulary and head dim (read from their specs); "
                        "its dense parent has every block at the family's widest shape and the most parameters.",
                  notes=[f"{f.key}: {f.note}" for f in fams if f.note])
    return with_file(table, files if several else None)


def glance_table(vs: list[Versus], models: dict[str, ModelFacts], marks: Marks,
                 file_of: FileOf | None = None) -> Table:
    """Per pruned model, backend and lengths: its size against the dense parent's, the batch-1 decode-step
    speed-up and the throughput speed-up at every batch.

    Args:
        vs: the comparisons (``compare.versus_dense``).
        models: every model by label.
        marks: the flagged points' flags (``flag_marks``): a speed-up resting on one carries the mark.
        file_of: add the file column.
    """
    groups: dict[tuple, list[Versus]] = defaultdict(list)
    for v in vs:
        groups[point_key(v.pruned)[:4] + (v.dense.model,)].append(v)
    groups = {k: g for k, g in groups.items() if any(v.both_ok for v in g)}
    batches = sorted({v.pruned.batch for v in vs})
    rows, files = [], []
    for (model, backend, inp, out, dense), group in groups.items():
        files.append(_pair_file(group[0], file_of) if file_of else "")
        by_batch = {v.pruned.batch: v for v in group}
        m, d = models[model], models[dense]
        m1 = by_batch.get(1)
        rows.append([model, dense, backend, f"{inp}/{out}", f"{100 * m.params / d.params:.1f}%",
                     f"{m.blocks}/{d.blocks}", marked(times(m1.decode_step_x), m1.rests_on(marks)) if m1 else ""]
                    + [marked(times(by_batch[b].throughput_x), by_batch[b].rests_on(marks)) if b in by_batch else ""
                       for b in batches])
    missed = not_compared(vs)
    across = file_of is not None and any(file_of(v.pruned) != file_of(v.dense) for v in vs)
    notes = (["An empty cell: one of the two points was not timed (see 'Not timed')."]
             + ([f"Not compared (no batch timed for both models): {', '.join(missed)}."] if missed else [])
             + (["A file column reading 'x.json; dense: y.json' compares points of two runs: the difference between "
                 "the runs (machine, load, versions) is part of that speed-up."] if across else [])
             + mark_note(rows))
    table = Table("pruned-vs-dense", "Pruned vs dense: what pruning buys",
                  ["model", "dense parent", "backend", "in/out", "parameters", "blocks", "decode step M1"]
                  + [f"tokens/s M{b}" for b in batches], rows, text=4,
                  intro="Speed-up of each pruned model over its dense parent on the same backend, lengths and batch "
                        "(above 1.00x: the pruned model is faster). Decode step M1: dense ms per decode step at batch "
                        "1 over the pruned model's (mean of all steps); tokens/s M<batch>: pruned throughput over "
                        "dense throughput, both at the median (p50) latency.", notes=notes)
    return with_file(table, files if file_of else None)


def versus_table(vs: list[Versus], marks: Marks, file_of: FileOf | None = None) -> Table:
    """Every pruned point next to its dense counterpart: throughput, decode step and peak memory.

    Args:
        vs: the comparisons (``compare.versus_dense``).
        marks: the flagged points' flags (``flag_marks``): marked speed-ups, and the flags in the note.
        file_of: add the file column.
    """
    rows, files = [], []
    for v in vs:
        p, d = v.pruned, v.dense
        if p.status != "ok" and d.status != "ok":
            continue  # neither was timed: the glance table's note and 'Not timed' say why
        files.append(_pair_file(v, file_of) if file_of else "")
        pair = (("pruned", p), ("dense", d))
        why = [f"{who}: {status_text(x)}" for who, x in pair if x.status != "ok"]
        why += [f"{MARK} {who}: {', '.join(marks[id(x)])}" for who, x in pair if id(x) in marks]
        saved = v.memory_saved_gb
        nums = [(median_throughput(x), x.decode_step_ms, x.peak_mem_gb) if v.both_ok else (None,) * 3 for x in (p, d)]
        flagged = v.rests_on(marks)
        rows.append([p.model, p.backend, f"{p.input_len}/{p.output_len}", str(p.batch),
                     fmt(nums[0][0], 1), fmt(nums[1][0], 1), marked(times(v.throughput_x), flagged),
                     fmt(nums[0][1], 2), fmt(nums[1][1], 2), marked(times(v.decode_step_x), flagged),
                     fmt(nums[0][2], 2), fmt(nums[1][2], 2),
                     "" if saved is None else f"{saved:.2f} ({v.memory_saved_pct:.0f}%)", "; ".join(why)])
    notes = ([MEMORY_NOTE] if cpu_timed([v.pruned for v in vs]) else []) + mark_note(rows)
    table = Table("pruned-vs-dense-detail", "Pruned vs dense, point by point",
                  ["model", "backend", "in/out", "batch", "tokens/s (p50)", "dense tokens/s", "speed-up",
                   "decode step ms", "dense step ms", "step speed-up", "peak mem GB", "dense peak GB",
                   "memory saved GB", "note"], rows, text=3, text_cols=(13,), notes=notes)
    return with_file(table, files if file_of else None)


def floor_table(rows: list[FloorRow], marks: Marks, file_of: FileOf | None = None) -> Table:
    """Batch-1 decode step of every model next to the weight-streaming floor, as a percentage.

    Args:
        rows: ``floor.floor_rows``.
        marks: the flagged points' flags (``flag_marks``): a flagged point's step carries the mark.
        file_of: add the file column.
    """
    out = []
    for r in rows:
        bw = f"{r.bandwidth[0]}, {r.bandwidth[1]:,.0f} GB/s" if r.bandwidth else ""
        achieved = (r.weight_bytes / (r.point.decode_step_ms / 1e3) / 1e9
                    if r.weight_bytes and r.point.decode_step_ms and not r.note else None)
        pct = r.pct_of_floor
        flags = marks.get(id(r.point))
        note = "; ".join(([r.note] if r.note else []) + ([f"{MARK} {', '.join(flags)}"] if flags else []))
        out.append([r.point.model, r.point.backend, f"{r.point.input_len}/{r.point.output_len}",
                    size(r.weight_bytes), marked(fmt(r.point.decode_step_ms, 2), bool(flags)),
                    fmt(r.floor_ms, 2), "" if pct is None else f"{pct:.1f}% of {r.bandwidth[1]:,.0f} GB/s",
                    fmt(achieved, 0), bw, note])
    table = Table("floor", "Batch-1 decode step against the weight-streaming floor",
                  ["model", "backend", "in/out", "weights", "decode step ms (M1)", "floor ms", "of the floor",
                   "achieved GB/s", "GPU bandwidth (datasheet)", "note"], out, text=3, text_cols=(6, 8, 9),
                  intro="At batch 1 a decode step reads every weight once, so it takes at least weight bytes / the "
                        "GPU's memory bandwidth (the floor; KV-cache reads left out). 'Of the floor' is floor / "
                        "measured step: 100% streams the weights at the datasheet bandwidth, the rest is overhead "
                        "(kernel launches, synchronisation) an engine can remove.", notes=mark_note(out))
    return with_file(table, [file_of(r.point) for r in rows] if file_of else None)


def trust_table(flags: list[Flag], points: list[Point], file_of: FileOf | None = None) -> Table:
    """Flagged points, why, and what to do (``file_of``: add the file column)."""
    rows = [[f.point.model, f.point.backend, f"{f.point.input_len}/{f.point.output_len}", str(f.point.batch),
             FLAG_NAMES[f.kind], f.detail, f.advice] for f in flags]
    ok = sum(p.status == "ok" for p in points)
    intro = (f"{len({id(f.point) for f in flags})} of {ok} timed points are flagged: compare them with care." if flags
             else f"None of the {ok} timed points shows a large spread or a latency that falls as the batch grows.")
    table = Table("trust", "Flagged points", ["model", "backend", "in/out", "batch", "flag", "numbers", "what to do"],
                  rows, text=3, text_cols=(4, 5, 6), intro=intro,
                  notes=[f"Large spread: p90 latency more than {100 * SPREAD_LIMIT:.0f}% above p50. Latency falls as "
                         "batch grows: a larger batch of the same model, backend and lengths finished more than "
                         f"{100 * INVERSION_LIMIT:.0f}% faster (p50 latency); it does at least the same work, so one "
                         "of the two was disturbed."])
    return with_file(table, [file_of(f.point) for f in flags] if file_of else None)
