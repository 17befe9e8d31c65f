"""``trtllm-kit report``: results files to charts, ``report.md`` and a self-contained ``report.html``.

The page answers, in this order: what pruning buys (each pruned model against its dense parent), under
which settings, how close each engine is to the hardware's floor, which numbers to trust, then every point.
"""

from __future__ import annotations

import json
from pathlib import Path

from trtllm_kit.report import charts
from trtllm_kit.report.compare import STATISTIC, families, headline, over_eager, versus_dense
from trtllm_kit.report.data import ReportData, load_results
from trtllm_kit.report.floor import floor_rows, no_floor
from trtllm_kit.report.html import Bullets, Chart, Heading, Notice, Para, markdown, page_html
from trtllm_kit.report.point_tables import (correctness_table, not_timed_table, speedup_table, step_table,
                                            sweep_table)
from trtllm_kit.report.settings import settings_table
from trtllm_kit.report.tables import flag_marks, floor_table, glance_table, models_table, trust_table, versus_table
from trtllm_kit.report.trust import step_flags, trust_flags
from trtllm_kit.utils.fs import atomic_dir

__all__ = ["load_results", "page_blocks", "report_from_results"]


def notices(data: ReportData) -> list:
    """What to know before reading the page: which results files are partial, which labels were made per-file."""
    partial = [s.name for s in data.sources if s.results.partial]
    out: list = [Notice(f"Partial results: {', '.join(partial)} {'is' if len(partial) == 1 else 'are'} from a sweep "
                        "that did not finish (saved after every point; an interrupted or failed sweep leaves it "
                        "behind). Points it had not reached are missing, and comparisons may lack batches.",
                        "partial")] if partial else []
    out += [Para(f"{label} is in {len(files)} results files ({', '.join(files)}): its points are labelled "
                 f"\"{label} [file]\" and compared only with points of the same file.")
            for label, files in data.renamed.items()]
    return out


def page_blocks(data: ReportData, chart_dir: Path) -> list:
    """Draw the charts into ``chart_dir`` and return the page's blocks (see ``report.html``)."""
    fams = families(data.models)
    points = data.points
    vs = versus_dense(points, fams)
    flags = trust_flags(points)
    marks = flag_marks(flags)
    flagged = set(marks)
    jumps = step_flags(data.steps)
    sp = over_eager(points)
    file_of = data.file_of if data.several else None
    drawn = {
        "pruned_vs_dense.png": charts.pruned_vs_dense(points, fams, flagged, chart_dir / "pruned_vs_dense.png"),
        "throughput_vs_latency.png": charts.throughput_vs_latency(points, flagged,
                                                                  chart_dir / "throughput_vs_latency.png"),
        "speedup_over_eager.png": charts.speedup_chart(sp, flagged, chart_dir / "speedup_over_eager.png"),
        "latency_per_token.png": charts.latency_per_token(data.steps, {id(f.row) for f in jumps},
                                                          chart_dir / "latency_per_token.png"),
    }

    def chart(file: str, caption: str) -> list:
        return [Chart(file, caption, *drawn[file])] if (chart_dir / file).exists() else []

    blocks = notices(data) + [Heading("What pruning buys", "summary")]
    lines = headline(vs, data.models, flagged)
    blocks += [Bullets(lines, "headline"), Para(STATISTIC + " The sentences above leave out every comparison that "
                                                "rests on a flagged point.")] if lines else []
    blocks += [Para(f"Family {f.key}: {f.note}.") for f in fams if f.note]
    if not fams:
        blocks.append(Para("No model's family is known (older results of models that are not presets): no comparison."))
    blocks += [Heading("Run settings", "run-settings"), settings_table(data)]
    blocks += [Heading("Pruned vs dense", "pruned"), models_table(data.models, fams, data.several)]
    if vs:
        blocks += [glance_table(vs, data.models, marks, file_of)]
        blocks += chart("pruned_vs_dense.png",
                        "Pruned variants against the dense model: throughput against median latency")
        blocks += [versus_table(vs, marks, file_of)]
    rows = floor_rows(data)
    why_not = no_floor(rows)
    blocks += [Heading("How close to the hardware", "hardware"),
               Para(why_not) if why_not else floor_table(rows, marks, file_of)]
    blocks += [Heading("Can I trust the numbers?", "trust-h"), trust_table(flags, points, file_of)]
    if jumps:
        blocks.append(Para(f"{len(jumps)} step-sweep row{'s are' if len(jumps) > 1 else ' is'} flagged: ms/token jumps "
                           "above the previous (smaller) tokens per step; see 'Step sweep'."))
    blocks += [Heading("Every point", "points")]
    blocks += chart("throughput_vs_latency.png", "Throughput against median latency (one point per batch size)")
    blocks += chart("speedup_over_eager.png", "Speed-up over PyTorch eager by batch size")
    blocks += chart("latency_per_token.png", "Latency per token against tokens per step")
    blocks += [sweep_table(points, marks, file_of)]
    blocks += [t for t in (not_timed_table(data), speedup_table(sp, marks, file_of), correctness_table(data),
                           step_table(data, jumps)) if t is not None]
    blocks.append(Para("Sources: " + ", ".join(str(s.path) for s in data.sources)))
    return blocks


def report_from_results(results: list[str | Path], out: str | Path, title: str = "trtllm-kit benchmark",
                        force: bool = True, shown_as: list[str | Path] | None = None) -> Path:
    """Write charts, ``report.md`` and ``report.html`` (self-contained) into ``out``; return the HTML path.

    Args:
        shown_as: the paths the page names as its sources, one per file of ``results``, where those are read
            from a temporary place that becomes them (default: ``results`` themselves).

    Raises:
        ToolkitError: a results file is missing or unreadable; ``out`` is not a directory the toolkit may replace.
    """
    data = load_results(results)
    for source, path in zip(data.sources, shown_as or []):
        source.path = Path(path)
    with atomic_dir(out, force=force, kind="report") as tmp:
        blocks = page_blocks(data, tmp)
        (tmp / "report.md").write_text(markdown(title, blocks) + "\n")
        (tmp / "report.html").write_text(page_html(title, blocks, tmp))
        counts = {b.file: b.points for b in blocks if isinstance(b, Chart)}
        (tmp / "chart_points.json").write_text(json.dumps(counts, indent=2) + "\n")
    return Path(out) / "report.html"
