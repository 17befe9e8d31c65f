"""``trtllm-kit report``: results files to charts, ``report.md`` and a self-contained ``report.html``."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from trtllm_kit.errors import ToolkitError
from trtllm_kit.report.charts import latency_per_token, speedup_chart, speedups, throughput_vs_latency
from trtllm_kit.utils.fs import atomic_dir

CHARTS = (("throughput_vs_latency.png", "Throughput against latency (one point per batch size)"),
          ("latency_per_token.png", "Latency per token against tokens per step"),
          ("speedup_over_eager.png", "Speed-up over PyTorch eager by batch size"))


def load_results(paths: list[str | Path]) -> dict:
    """Merge results files (points, checks and step sweeps concatenated; environments kept apart)."""
    from trtllm_kit.bench.results import BenchResults

    merged = {"points": [], "correctness": [], "step_sweep": [], "envs": [], "sources": []}
    for p in paths:
        res = BenchResults.load(p)
        merged["points"] += [x.model_dump() for x in res.points]
        merged["correctness"] += [x.model_dump() for x in res.correctness]
        merged["step_sweep"] += [x.model_dump() for x in res.step_sweep]
        merged["envs"].append(res.env)
        merged["sources"].append(str(BenchResults.path_in(p)))
    return merged


def _fmt(v, nd=3):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{nd}f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def tables(res: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table the report shows."""
    out = []
    hdr = ["model", "backend", "in", "out", "batch", "status", "latency s (mean)", "p50", "p90", "tokens/s",
           "TTFT s", "decode step ms", "ms/token", "peak mem GB"]
    rows = []
    for p in sorted(res["points"], key=lambda p: (p["input_len"], p["output_len"], p["model"], p["backend"], p["batch"])):
        rows.append([p["model"], p["backend"], str(p["input_len"]), str(p["output_len"]), str(p["batch"]),
                     p["status"] + (f": {p['message']}" if p.get("message") and p["status"] != "ok" else ""),
                     _fmt(p.get("latency_mean_s")), _fmt(p.get("latency_p50_s")), _fmt(p.get("latency_p90_s")),
                     _fmt(p.get("throughput_tok_s"), 1), _fmt(p.get("ttft_s"), 4), _fmt(p.get("decode_step_ms"), 2),
                     _fmt(p.get("ms_per_token"), 2), _fmt(p.get("peak_mem_gb"), 2)])
    out.append(("Sweep", hdr, rows))
    sp = speedups(res["points"])
    if sp:
        batches = sorted({b for v in sp.values() for b in v})
        out.append(("Speed-up over eager (x)", ["model", "backend", "in", "out"] + [f"M{b}" for b in batches],
                    [[k[0], k[1], str(k[2]), str(k[3])] + [_fmt(sp[k].get(b), 2) for b in batches] for k in sorted(sp)]))
    out.append(("Correctness: greedy tokens vs eager (first 16); setup: load + compile + first runs, untimed",
                ["model", "backend", "implementation", "status", "result", "setup s", "compiled graphs"],
                [[c["model"], c["backend"], c.get("impl") or "", c["status"],
                  ("reference" if c.get("reference") else "match" if c.get("matches_eager") else
                   f"first mismatch at token {c.get('first_mismatch')}") if c["status"] == "ok" else c.get("message", ""),
                  _fmt(c.get("setup_s"), 1), _fmt(c.get("recompiles"))]
                 for c in res["correctness"]]))
    if res["step_sweep"]:
        out.append(("Step sweep", ["model", "backend", "tokens/step", "past", "status", "step ms", "ms/token"],
                    [[s["model"], s["backend"], str(s["tokens"]), str(s["past"]), s["status"], _fmt(s.get("step_ms"), 2),
                      _fmt(s.get("ms_per_token"), 3)] for s in res["step_sweep"]]))
    return out


def _md_table(header, rows) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _env_lines(res: dict) -> list[tuple[str, str]]:
    keys = ("device", "compute_capability", "driver", "cuda", "torch", "transformers", "onnxruntime", "tensorrt",
            "tensorrt-rtx", "toolkit", "git_commit", "cpu_count", "platform", "time", "command")
    out = []
    for i, env in enumerate(res["envs"]):
        for k in keys:
            if env.get(k) is not None:
                out.append((f"{k}" + (f" [{i + 1}]" if len(res["envs"]) > 1 else ""), str(env[k])))
    return out


def report_from_results(results: list[str | Path], out: str | Path, title: str = "trtllm-kit benchmark",
                        force: bool = True) -> Path:
    """Write charts, ``report.md`` and ``report.html`` into ``out``; return the HTML path."""
    res = load_results(results)
    with atomic_dir(out, force=force, kind="report") as tmp:
        counts = {CHARTS[0][0]: throughput_vs_latency(res["points"], tmp / CHARTS[0][0]),
                  CHARTS[1][0]: latency_per_token(res["step_sweep"], tmp / CHARTS[1][0]),
                  CHARTS[2][0]: speedup_chart(res["points"], tmp / CHARTS[2][0])}
        charts = [(f, cap) for f, cap in CHARTS if (tmp / f).exists()]
        tbls = tables(res)
        env = _env_lines(res)
        md = [f"# {title}", "", "## Environment", "", _md_table(["", ""], env), ""]
        for f, cap in charts:
            md += [f"## {cap}", "", f"![{cap}]({f})", ""]
        for t, h, rows in tbls:
            md += [f"## {t}", "", _md_table(h, rows), ""]
        md += ["Sources: " + ", ".join(res["sources"]), ""]
        (tmp / "report.md").write_text("\n".join(md))
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
                 "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
                 "font-size:12px;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
                 "td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}</style>",
                 "</head><body>", f"<h1>{html.escape(title)}</h1>", "<h2>Environment</h2><table>"]
        parts += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in env]
        parts.append("</table>")
        for f, cap in charts:
            data = base64.b64encode((tmp / f).read_bytes()).decode()
            parts.append(f"<h2>{html.escape(cap)}</h2><img class='chart' data-points='{counts[f]}' alt='{html.escape(cap)}'"
                         f" src='data:image/png;base64,{data}'>")
        for t, h, rows in tbls:
            parts.append(f"<h2>{html.escape(t)}</h2><table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in h) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows]
            parts.append("</table>")
        # Marks the page once every chart image has decoded, so a headless browser can check it.
        parts.append("<script>window.addEventListener('load',()=>{const i=[...document.images];"
                     "document.body.dataset.chartsLoaded=i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length;"
                     "});</script>")
        parts.append("</body></html>")
        (tmp / "report.html").write_text("\n".join(parts))
        (tmp / "chart_points.json").write_text(json.dumps(counts, indent=2) + "\n")
    return Path(out) / "report.html"
