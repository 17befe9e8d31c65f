"""The paper's charts from typed results: throughput vs latency, pruned vs dense, latency per token, and
speed-up over eager. Latency is a point's median (p50), as in every comparison of the report. Point labels
(M<batch>) are moved apart with adjustText so they never overlap. A flagged point (or a speed-up resting on
one) is drawn as a hollow marker, and the legend says so.

Every chart returns (points plotted, of which hollow): 0 points means the chart has no data."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from trtllm_kit.bench.results import Point, StepRow
from trtllm_kit.report.compare import Family, OverEager, median_throughput

BACKEND_STYLE = {"eager": ("o", "-"), "ort": ("s", "--"), "trt": ("^", ":"), "compiled": ("D", "-.")}


def _style(model: str, backend: str, models: list[str]) -> dict:
    """Colour by model, marker and line style by backend, so families and backends read apart."""
    import matplotlib

    marker, line = BACKEND_STYLE.get(backend, ("D", "-."))
    return {"color": matplotlib.colormaps["tab10"](models.index(model) % 10), "marker": marker, "linestyle": line}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def label_points(ax, xs: list[float], ys: list[float], labels: list[str]) -> list:
    """Write ``labels`` next to their points and move them apart (adjustText), with a leader line where
    a label had to move away. Call once per panel, after its scales and limits are final.

    Returns:
        The text objects, where they ended up.
    """
    from adjustText import adjust_text

    texts = [ax.text(x, y, s, fontsize=7) for x, y, s in zip(xs, ys, labels)]
    if texts:
        adjust_text(texts, x=xs, y=ys, ax=ax, time_lim=1.0,
                    arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5})
    return texts


HOLLOW = "hollow marker: flagged point"


def _hollow(ax, xs: list[float], ys: list[float], style: dict) -> int:
    """Draw flagged points over their series as hollow markers of its colour; returns how many."""
    if xs:
        ax.plot(xs, ys, linestyle="none", marker=style["marker"], markersize=9, markerfacecolor="white",
                markeredgecolor=style["color"], markeredgewidth=1.6, zorder=3)
    return len(xs)


def _legend(ax, hollow: bool, **kw) -> None:
    """The axes' legend (where it has labelled lines), with an entry for hollow markers where ``hollow``."""
    from matplotlib.lines import Line2D

    handles, names = ax.get_legend_handles_labels()
    if hollow:
        handles.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="grey"))
        names.append(HOLLOW)
    if handles:
        ax.legend(handles, names, **kw)


def _save(fig, axes, labels: dict, legend_ax, path: Path, plt, hollow: bool = False) -> None:
    """Legend outside ``legend_ax`` (None: none; ``hollow``: with the hollow-marker entry), layout, then the point
    labels (they need final axes), PNG, free."""
    if legend_ax is not None:
        _legend(legend_ax, hollow, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    for ax in axes:
        xs, ys, ss = labels.get(ax, ([], [], []))
        label_points(ax, xs, ys, ss)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ok(points: list[Point]) -> list[Point]:
    return [p for p in points if p.status == "ok" and p.latency_p50_s is not None]


def _tvl_panel(ax, series: dict, models: list[str], labels: dict, flagged: set[int],
               dense: str | None = None) -> tuple[int, int]:
    """Throughput (log 2) against median latency, one line per (model, backend) in ``series``, flagged points
    (ids in ``flagged``) hollow; returns (points drawn, of which hollow)."""
    n = hollow = 0
    for (model, backend), pts in sorted(series.items()):
        pts = sorted(pts, key=lambda p: p.batch)
        xs, ys = [p.latency_p50_s for p in pts], [median_throughput(p) for p in pts]
        style = _style(model, backend, models)
        if model == dense:
            style |= {"color": "black", "linewidth": 2.2}
        ax.plot(xs, ys, label=f"{model} / {backend}" + (" (dense)" if model == dense else ""), **style)
        bad = [i for i, p in enumerate(pts) if id(p) in flagged]
        hollow += _hollow(ax, [xs[i] for i in bad], [ys[i] for i in bad], style)
        lab = labels.setdefault(ax, ([], [], []))
        lab[0].extend(xs), lab[1].extend(ys), lab[2].extend(f"M{p.batch}" for p in pts)
        n += len(pts)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("latency, median of the timed runs (s)")
    ax.set_ylabel("throughput at that latency (tokens/s)")
    ax.grid(True, which="both", alpha=0.3)
    return n, hollow


def throughput_vs_latency(points: list[Point], flagged: set[int], path: Path) -> tuple[int, int]:
    """One panel per (input, output); one series per model x backend; points labelled M<batch>, flagged ones
    (ids in ``flagged``) hollow."""
    plt = _plt()
    ok = _ok(points)
    pairs = sorted({(p.input_len, p.output_len) for p in points})
    if not pairs:
        return 0, 0
    fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs) + 2.5, 4.8), squeeze=False)
    models = sorted({p.model for p in ok})
    labels: dict = {}
    n = hollow = 0
    for ax, (inp, out) in zip(axes[0], pairs):
        series = defaultdict(list)
        for p in ok:
            if (p.input_len, p.output_len) == (inp, out):
                series[(p.model, p.backend)].append(p)
        drawn = _tvl_panel(ax, series, models, labels, flagged)
        n, hollow = n + drawn[0], hollow + drawn[1]
        ax.set_title(f"input {inp}, output {out}")
    _save(fig, list(axes[0]), labels, axes[0][-1], path, plt, hollow > 0)
    return n, hollow


def pruned_vs_dense(points: list[Point], fams: list[Family], flagged: set[int], path: Path) -> tuple[int, int]:
    """The paper's comparison: each family's pruned variants against its dense model, throughput against
    latency, one panel per (input, output) and one row per (family, backend); the dense model in black,
    flagged points (ids in ``flagged``) hollow. No data (0 points): no family has a dense and a pruned member
    timed."""
    ok = _ok(points)
    rows = []
    for fam in fams:
        if not fam.pruned:
            continue
        for backend in sorted({p.backend for p in ok if p.model == fam.dense}):
            if any(p.backend == backend and p.model in fam.pruned for p in ok):
                rows.append((fam, backend))
    pairs = sorted({(p.input_len, p.output_len) for p in ok})
    if not rows or not pairs:
        return 0, 0
    plt = _plt()
    fig, axes = plt.subplots(len(rows), len(pairs), figsize=(6 * len(pairs) + 3, 4.6 * len(rows)), squeeze=False)
    labels: dict = {}
    n = hollow = 0
    for r, (fam, backend) in enumerate(rows):
        members = list(fam.members)
        for ax, (inp, out) in zip(axes[r], pairs):
            series = defaultdict(list)
            for p in ok:
                if p.model in members and p.backend == backend and (p.input_len, p.output_len) == (inp, out):
                    series[(p.model, p.backend)].append(p)
            drawn = _tvl_panel(ax, series, members, labels, flagged, dense=fam.dense)
            n, hollow = n + drawn[0], hollow + drawn[1]
            ax.set_title(f"{fam.dense} family, {backend}: input {inp}, output {out}", fontsize=10)
            _legend(ax, drawn[1] > 0, fontsize=7, loc="best")
    _save(fig, [ax for row in axes for ax in row], labels, None, path, plt)
    return n, hollow


def latency_per_token(steps: list[StepRow], flagged: set[int], path: Path) -> tuple[int, int]:
    """Latency per token against tokens processed in one step: the fixed per-step cost amortized; flagged rows
    (ids in ``flagged``: a jump in ms/token) hollow."""
    plt = _plt()
    ok = [s for s in steps if s.status == "ok"]
    if not steps:
        return 0, 0
    fig, ax = plt.subplots(figsize=(9, 4.8))
    n = hollow = 0
    series = sorted({(s.model, s.backend) for s in ok})
    models = sorted({m for m, _ in series})
    for model, backend in series:
        pts = sorted((s for s in ok if (s.model, s.backend) == (model, backend)), key=lambda s: s.tokens)
        style = _style(model, backend, models)
        ax.plot([s.tokens for s in pts], [s.ms_per_token for s in pts], label=f"{model} / {backend}", **style)
        bad = [s for s in pts if id(s) in flagged]
        hollow += _hollow(ax, [s.tokens for s in bad], [s.ms_per_token for s in bad], style)
        n += len(pts)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tokens processed in one step")
    ax.set_ylabel("latency per token (ms)")
    ax.set_title(f"one decode step after {steps[0].past} tokens")
    ax.grid(True, which="both", alpha=0.3)
    _save(fig, [ax], {}, ax, path, plt, hollow > 0)
    return n, hollow


def speedup_chart(sp: dict[tuple, dict[int, OverEager]], flagged: set[int], path: Path) -> tuple[int, int]:
    """Speed-up over eager by batch size (``compare.over_eager``), one panel per (input, output), one line per
    model x backend; a speed-up resting on a flagged point (ids in ``flagged``) hollow."""
    plt = _plt()
    pairs = sorted({(k[2], k[3]) for k in sp})
    if not pairs:
        return 0, 0
    fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs) + 2.5, 4.4), squeeze=False)
    n = hollow = 0
    models = sorted({k[0] for k in sp})
    for ax, (inp, out) in zip(axes[0], pairs):
        for key in sorted(k for k in sp if (k[2], k[3]) == (inp, out)):
            batches = sorted(sp[key])
            style = _style(key[0], key[1], models)
            ax.plot(batches, [sp[key][b].x for b in batches], label=f"{key[0]} / {key[1]}", **style)
            bad = [b for b in batches if sp[key][b].rests_on(flagged)]
            hollow += _hollow(ax, bad, [sp[key][b].x for b in bad], style)
            n += len(batches)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("speed-up over eager (x)")
        ax.set_title(f"input {inp}, output {out}")
        ax.grid(True, which="both", alpha=0.3)
    _save(fig, list(axes[0]), {}, axes[0][-1], path, plt, hollow > 0)
    return n, hollow
