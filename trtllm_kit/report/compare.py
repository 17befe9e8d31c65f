"""Pruned models against their dense parent: families from specs, the dense member, speed-ups and memory.

A family is the models that share ``family_of`` (hidden size, vocabulary, head dim: what depth and width
pruning leave unchanged), never models whose names look alike. Its dense parent is the member whose every
block is at the family's widest shape (most query heads, KV heads and MLP width seen in any block of any
member) and which was not cut out of a deeper model, with the most parameters. Where that model is in
several results files (one per-file label each, see ``report.data``), each copy is the dense parent of the
members from its own file only, so no comparison pairs points of two runs of the same model.
"""

from __future__ import annotations

from dataclasses import dataclass

from trtllm_kit.bench.results import Point
from trtllm_kit.report.data import ModelFacts

STATISTIC = ("Speed-ups and comparisons on this page use the median (p50) latency of a point's timed runs, not the "
             "mean: with few runs one disturbed run moves the mean. A throughput speed-up compares batch x output "
             "tokens / p50; a decode-step speed-up compares the mean of all decode steps of the timed runs (results "
             "do not record a per-step median).")


def median_throughput(p: Point) -> float | None:
    """Generated tokens per second at the median latency: batch x output tokens / p50 (None: not timed)."""
    return p.batch * p.output_len / p.latency_p50_s if p.status == "ok" and p.latency_p50_s else None


@dataclass(frozen=True)
class Family:
    """Models of one family in the results.

    Attributes:
        key: the ``family`` string they share.
        members: their labels, most parameters first.
        dense: the dense parent's label, or None.
        note: why there is no dense parent (empty when there is one).
        alone: the role of its members where there is no dense parent.
    """

    key: str
    members: tuple[str, ...]
    dense: str | None
    note: str = ""
    alone: str = "no dense member in these results"

    @property
    def pruned(self) -> tuple[str, ...]:
        """The members compared with the dense parent (none without one)."""
        return tuple(m for m in self.members if self.dense and m != self.dense)


def _full_width(facts: ModelFacts, widest: tuple[int, int, int]) -> bool:
    return all((la.n_heads, la.n_kv_heads, la.mlp_dim) == widest for la in facts.layers)


def pruning_kind(model: ModelFacts, dense: ModelFacts) -> str:
    """"depth", "width" or "depth+width": what sets ``model`` apart from its dense parent."""
    full = (dense.layers[0].n_heads, dense.layers[0].n_kv_heads, dense.layers[0].mlp_dim)
    kinds = [k for k, yes in (("depth", model.blocks < dense.blocks or model.depth_pruned),
                              ("width", not _full_width(model, full))) if yes]
    return "+".join(kinds) or "not"


def families(models: dict[str, ModelFacts]) -> list[Family]:
    """Group models by family and find each family's dense parent (see the module docstring).

    Models whose family is unknown (an older results file, not a preset) form no family. A dense parent found
    in several files makes one ``Family`` per file (its copy there and that file's other members), and one
    without a dense parent for members of other files.
    """
    groups: dict[str, list[ModelFacts]] = {}
    for m in models.values():
        if m.family is not None and m.layers:
            groups.setdefault(m.family, []).append(m)
    out = []
    for key, ms in sorted(groups.items()):
        ms.sort(key=lambda m: (-m.params, m.label))
        layers = [la for m in ms for la in m.layers]
        widest = tuple(max(getattr(la, k) for la in layers) for k in ("n_heads", "n_kv_heads", "mlp_dim"))
        dense = [m for m in ms if _full_width(m, widest) and not m.depth_pruned]
        if not dense:
            out.append(Family(key, tuple(m.label for m in ms), None,
                              f"no dense member in these results (none has all its blocks, each at the family's widest "
                              f"shape: {widest[0]} heads, MLP {widest[2]}), so nothing to compare with"))
            continue
        copies = [m for m in dense if m.copy_of is not None and m.copy_of == dense[0].copy_of] or dense[:1]
        files = {c.file for c in copies}
        rest = [m for m in ms if m.label not in {c.label for c in copies}]
        for top in copies:
            mine = [m for m in ms if m is top or (m in rest and (len(copies) == 1 or m.file == top.file))]
            where = top.file if len(copies) > 1 else "these results"
            note = f"only the dense model of this family is in {where}: nothing to compare" if len(mine) == 1 else ""
            out.append(Family(key, tuple(m.label for m in mine), top.label, note))
        others = [m for m in rest if len(copies) > 1 and m.file not in files]
        if others:
            out.append(Family(key, tuple(m.label for m in others), None,
                              f"its dense model {copies[0].copy_of} is only in {', '.join(sorted(files))}, not in "
                              "these models' files: points of two files are not compared",
                              alone="not compared: its dense model is in other files only"))
    return out


@dataclass(frozen=True)
class Versus:
    """One pruned model's point against its dense parent's point at the same backend, lengths and batch.

    Ratios are None where either point was not timed (or lacks the number, e.g. peak memory on the CPU).
    """

    pruned: Point
    dense: Point

    @property
    def both_ok(self) -> bool:
        return self.pruned.status == "ok" and self.dense.status == "ok"

    def rests_on(self, flagged: set[int]) -> bool:
        """Either point is flagged (``flagged``: ids of the flagged points)."""
        return id(self.pruned) in flagged or id(self.dense) in flagged

    @property
    def throughput_x(self) -> float | None:
        """Pruned tokens/s over dense tokens/s, both at the median latency (higher is better)."""
        return _ratio(median_throughput(self.pruned), median_throughput(self.dense)) if self.both_ok else None

    @property
    def decode_step_x(self) -> float | None:
        """Dense decode-step ms over pruned decode-step ms (higher is better)."""
        return _ratio(self.dense.decode_step_ms, self.pruned.decode_step_ms) if self.both_ok else None

    @property
    def memory_saved_gb(self) -> float | None:
        """Dense peak memory minus pruned peak memory, GB."""
        a, b = self.dense.peak_mem_gb, self.pruned.peak_mem_gb
        return a - b if self.both_ok and a is not None and b is not None else None

    @property
    def memory_saved_pct(self) -> float | None:
        saved = self.memory_saved_gb
        return 100 * saved / self.dense.peak_mem_gb if saved is not None and self.dense.peak_mem_gb else None


@dataclass(frozen=True)
class OverEager:
    """One backend's point against eager's at the same model, lengths and batch."""

    point: Point
    eager: Point

    def rests_on(self, flagged: set[int]) -> bool:
        """Either point is flagged (``flagged``: ids of the flagged points)."""
        return id(self.point) in flagged or id(self.eager) in flagged

    @property
    def x(self) -> float | None:
        """Eager's median latency over this backend's (higher is better)."""
        return _ratio(self.eager.latency_p50_s, self.point.latency_p50_s)


def over_eager(points: list[Point]) -> dict[tuple, dict[int, OverEager]]:
    """{(model, backend, input, output): {batch: OverEager}} for every ok non-eager point with an ok eager twin."""
    ok = [p for p in points if p.status == "ok" and p.latency_p50_s]
    eager = {point_key(p)[:1] + point_key(p)[2:]: p for p in ok if p.backend == "eager"}
    out: dict[tuple, dict[int, OverEager]] = {}
    for p in ok:
        base = eager.get(point_key(p)[:1] + point_key(p)[2:])
        if base is not None and p.backend != "eager":
            out.setdefault(point_key(p)[:4], {})[p.batch] = OverEager(p, base)
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def point_key(p: Point) -> tuple:
    """(model, backend, input, output, batch): one point of the sweep."""
    return (p.model, p.backend, p.input_len, p.output_len, p.batch)


def versus_dense(points: list[Point], fams: list[Family]) -> list[Versus]:
    """Every pruned point that has a dense counterpart, in family, model, backend, lengths, batch order."""
    index: dict[tuple, Point] = {}
    for p in points:
        index.setdefault(point_key(p), p)
    out = []
    for fam in fams:
        for model in fam.pruned:
            mine = sorted((p for k, p in index.items() if k[0] == model),
                          key=lambda p: (p.backend, p.input_len, p.output_len, p.batch))
            for p in mine:
                base = index.get((fam.dense, *point_key(p)[1:]))
                if base is not None:
                    out.append(Versus(p, base))
    return out


def _span(lo: float, hi: float, fmt: str) -> str:
    a, b = format(lo, fmt), format(hi, fmt)
    return a if a == b else f"{a} to {b}"


def _batches(bs: list[int]) -> str:
    """"batch 1", "batch 1 and 16", "batch 1, 16 and 64"."""
    words = [str(b) for b in bs]
    return "batch " + (words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1])


def headline(vs: list[Versus], models: dict[str, ModelFacts], flagged: set[int]) -> list[str]:
    """One sentence per pruned model, backend and lengths with at least one batch timed for both models.

    Its numbers (throughput and batch-1 decode-step speed-ups, peak memory) come only from comparisons that
    rest on no flagged point; the sentence names the batches left out for resting on one.

    Args:
        vs: the comparisons (``versus_dense``).
        models: every model by label (for the sizes).
        flagged: ids of the flagged points (``trust.trust_flags``).
    """
    groups: dict[tuple, list[Versus]] = {}
    for v in vs:
        if v.throughput_x is not None:
            groups.setdefault(point_key(v.pruned)[:4], []).append(v)
    out = []
    for (model, backend, inp, out_len), group in groups.items():
        ok = sorted(group, key=lambda v: v.pruned.batch)
        clean = [v for v in ok if not v.rests_on(flagged)]
        left = [v.pruned.batch for v in ok if v.rests_on(flagged)]
        dense = ok[0].dense.model
        m, d = models[model], models[dense]
        lead = (f"{model} ({100 * m.params / d.params:.0f}% of {dense}'s parameters, {m.blocks}/{d.blocks} blocks) "
                f"on {backend}, input {inp} / output {out_len}: ")
        if not clean:
            out.append(lead + f"no number quoted: every comparison ({_batches(left)}) rests on a flagged point "
                              "(see 'Can I trust the numbers?').")
            continue
        xs = [v.throughput_x for v in clean]
        parts = [f"throughput {_span(min(xs), max(xs), '.2f')}x the dense model's at "
                 f"{_batches([v.pruned.batch for v in clean])}"]
        m1 = next((v for v in ok if v.pruned.batch == 1 and v.decode_step_x is not None), None)
        if m1 and not m1.rests_on(flagged):
            parts.append(f"batch-1 decode step {m1.decode_step_x:.2f}x as fast ({m1.pruned.decode_step_ms:.2f} vs "
                         f"{m1.dense.decode_step_ms:.2f} ms)")
        mem = [100 * v.pruned.peak_mem_gb / v.dense.peak_mem_gb for v in clean if v.memory_saved_pct is not None]
        parts.append(f"peak memory {_span(min(mem), max(mem), '.0f')}% of the dense model's" if mem
                     else "peak memory not measured (CPU)")
        if left:
            parts.append(f"{_batches(left)} left out: {'it rests' if len(left) == 1 else 'they rest'} on a flagged "
                         "point (see 'Can I trust the numbers?')")
        out.append(lead + "; ".join(parts) + ".")
    return out


def not_compared(vs: list[Versus]) -> list[str]:
    """(model / backend) pairs where no batch was timed for both the pruned and the dense model."""
    timed = {point_key(v.pruned)[:2] for v in vs if v.both_ok}
    return sorted({f"{v.pruned.model} / {v.pruned.backend}" for v in vs if point_key(v.pruned)[:2] not in timed})
