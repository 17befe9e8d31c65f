"""The paper's charts from results files: throughput vs latency, latency per token, speed-up over eager."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

MARKERS = "osD^v<>ph*"
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


def _save(fig, legend_ax, path: Path, plt) -> None:
    """Legend outside the last panel, then write the PNG and free the figure."""
    handles, _ = legend_ax.get_legend_handles_labels()
    if handles:
        legend_ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def throughput_vs_latency(points: list[dict], path: Path) -> int:
    """One panel per (input, output); one series per model x backend; points labelled M<batch>.

    Returns:
        The number of plotted points (0 means the chart has no data).
    """
    plt = _plt()
    ok = [p for p in points if p.get("status") == "ok"]
    pairs = sorted({(p["input_len"], p["output_len"]) for p in points})
    if not pairs:
        return 0
    fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs) + 2.5, 4.8), squeeze=False)
    series = sorted({(p["model"], p["backend"]) for p in ok})
    models = sorted({m for m, _ in series})
    n = 0
    for ax, (inp, out) in zip(axes[0], pairs):
        for model, backend in series:
            pts = sorted((p for p in ok if (p["model"], p["backend"]) == (model, backend)
                          and (p["input_len"], p["output_len"]) == (inp, out)), key=lambda p: p["batch"])
            if not pts:
                continue
            xs, ys = [p["latency_mean_s"] for p in pts], [p["throughput_tok_s"] for p in pts]
            ax.plot(xs, ys, label=f"{model} / {backend}", **_style(model, backend, models))
            for p, x, y in zip(pts, xs, ys):
                ax.annotate(f"M{p['batch']}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
            n += len(pts)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("latency (s)")
        ax.set_ylabel("throughput (tokens/s)")
        ax.set_title(f"input {inp}, output {out}")
        ax.grid(True, which="both", alpha=0.3)
    _save(fig, axes[0][-1], path, plt)
    return n


def latency_per_token(steps: list[dict], path: Path) -> int:
    """Latency per token against tokens processed in one step: the fixed per-step cost amortized."""
    plt = _plt()
    ok = [s for s in steps if s.get("status") == "ok"]
    if not steps:
        return 0
    fig, ax = plt.subplots(figsize=(9, 4.8))
    n = 0
    series = sorted({(s["model"], s["backend"]) for s in ok})
    models = sorted({m for m, _ in series})
    for model, backend in series:
        pts = sorted((s for s in ok if (s["model"], s["backend"]) == (model, backend)), key=lambda s: s["tokens"])
        ax.plot([s["tokens"] for s in pts], [s["ms_per_token"] for s in pts], label=f"{model} / {backend}",
                **_style(model, backend, models))
        n += len(pts)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tokens processed in one step")
    ax.set_ylabel("latency per token (ms)")
    ax.set_title(f"one decode step after {steps[0].get('past', '?')} tokens")
    ax.grid(True, which="both", alpha=0.3)
    _save(fig, ax, path, plt)
    return n


def speedups(points: list[dict]) -> dict:
    """{(model, backend, input, output): {batch: eager latency / backend latency}} for ok non-eager points."""
    eager = {(p["model"], p["input_len"], p["output_len"], p["batch"]): p["latency_mean_s"]
             for p in points if p["backend"] == "eager" and p.get("status") == "ok"}
    out: dict = defaultdict(dict)
    for p in points:
        key = (p["model"], p["input_len"], p["output_len"], p["batch"])
        if p.get("status") == "ok" and key in eager and p["backend"] != "eager":
            out[(p["model"], p["backend"], p["input_len"], p["output_len"])][p["batch"]] = eager[key] / p["latency_mean_s"]
    return dict(out)


def speedup_chart(points: list[dict], path: Path) -> int:
    """Speed-up over eager by batch size, one panel per (input, output), one line per model x backend."""
    plt = _plt()
    sp = speedups(points)
    pairs = sorted({(k[2], k[3]) for k in sp})
    if not pairs:
        return 0
    fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs) + 2.5, 4.4), squeeze=False)
    n = 0
    models = sorted({k[0] for k in sp})
    for ax, (inp, out) in zip(axes[0], pairs):
        keys = sorted(k for k in sp if (k[2], k[3]) == (inp, out))
        for key in keys:
            batches = sorted(sp[key])
            ax.plot(batches, [sp[key][b] for b in batches], label=f"{key[0]} / {key[1]}",
                    **_style(key[0], key[1], models))
            n += len(batches)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("speed-up over eager (x)")
        ax.set_title(f"input {inp}, output {out}")
        ax.grid(True, which="both", alpha=0.3)
    _save(fig, axes[0][-1], path, plt)
    return n
