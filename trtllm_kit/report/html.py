"""A page as a list of blocks (headings, paragraphs, lists, tables, charts), written as ``report.md`` and as a
self-contained ``report.html`` (charts inlined as base64 PNG)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

from trtllm_kit.report.tables import Table


@dataclass
class Heading:
    text: str
    id: str = ""
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Notice:
    """A warning at the top of the page (e.g. partial results), set apart from the text."""

    text: str
    id: str = ""


@dataclass
class Bullets:
    items: list[str]
    id: str = ""


@dataclass
class Chart:
    """A PNG beside the report; ``points`` is how many data points it plots (0: none), ``hollow`` how many of
    them are drawn hollow (flagged)."""

    file: str
    caption: str
    points: int
    hollow: int = 0

    @property
    def text(self) -> str:
        """The caption under the chart."""
        if not self.hollow:
            return self.caption + "."
        return (f"{self.caption}. Hollow markers: {self.hollow} flagged (marked ⚑ in the tables; see 'Can I trust "
                "the numbers?').")


CSS = ("body{font-family:sans-serif;margin:2em;max-width:1500px;line-height:1.35}"
       "table{border-collapse:collapse;font-size:12px;margin:.4em 0 .6em}"
       "td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}th{background:#f4f4f4}"
       "td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}td.txt,th.txt{text-align:left}"
       "td{white-space:pre-line}p.note{font-size:12px;color:#555;margin:.2em 0}"
       "p.notice{background:#fff3cd;border:1px solid #e0b800;padding:.5em .8em}"
       "img{max-width:100%;border:1px solid #eee}li{margin:.2em 0}p.caption{font-size:13px;margin:.1em 0 1em}")


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", "<br>")


def markdown(title: str, blocks: list) -> str:
    """The page as Markdown (text columns left-aligned, number columns right-aligned)."""
    out = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Notice):
            out += [f"> **{b.text}**", ""]
        elif isinstance(b, Bullets):
            out += [f"- {i}" for i in b.items] + [""]
        elif isinstance(b, Chart):
            out += [f"![{b.caption}]({b.file})", "", f"*{b.text}*", ""]
        elif isinstance(b, Table):
            out += [f"### {b.title}", ""] + ([b.intro, ""] if b.intro else [])
            out += ["| " + " | ".join(_md_cell(h) for h in b.header) + " |",
                    "|" + "|".join(":---" if b.is_text(i) else "---:" for i in range(len(b.header))) + "|"]
            out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b.rows]
            out += [""] + [f"{n}" for n in b.notes] + ([""] if b.notes else [])
    return "\n".join(out)


def _table_html(t: Table) -> list[str]:
    e = html.escape
    cls = ["txt" if t.is_text(i) else "num" for i in range(len(t.header))]
    out = [f"<h3>{e(t.title)}</h3>"] + ([f"<p>{e(t.intro)}</p>"] if t.intro else [])
    out.append(f"<table id='{e(t.id)}'><tr>" + "".join(f"<th class='{c}'>{e(h)}</th>" for c, h in zip(cls, t.header))
               + "</tr>")
    out += ["<tr>" + "".join(f"<td class='{c}'>{e(str(v))}</td>" for c, v in zip(cls, r)) + "</tr>" for r in t.rows]
    out.append("</table>")
    out += [f"<p class='note'>{e(n)}</p>" for n in t.notes]
    return out


def page_html(title: str, blocks: list, chart_dir: Path) -> str:
    """The page as one HTML file; charts are read from ``chart_dir`` and inlined."""
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{CSS}</style>",
             "</head><body>", f"<h1>{e(title)}</h1>"]
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}" + (f" id='{e(b.id)}'" if b.id else "") + f">{e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, Notice):
            parts.append("<p class='notice'" + (f" id='{e(b.id)}'" if b.id else "") + f">{e(b.text)}</p>")
        elif isinstance(b, Bullets):
            attr = f" id='{e(b.id)}'" if b.id else ""
            parts.append(f"<ul{attr}>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Chart):
            data = base64.b64encode((chart_dir / b.file).read_bytes()).decode()
            parts.append(f"<img class='chart' data-points='{b.points}' data-hollow='{b.hollow}' alt='{e(b.caption)}' "
                         f"src='data:image/png;base64,{data}'>")
            parts.append(f"<p class='caption'>{e(b.text)}</p>")
        elif isinstance(b, Table):
            parts += _table_html(b)
    # Marks the page once every chart image has decoded, so a headless browser can check it.
    parts.append("<script>window.addEventListener('load',()=>{const i=[...document.images];"
                 "document.body.dataset.chartsLoaded=i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length;"
                 "});</script>")
    parts.append("</body></html>")
    return "\n".join(parts)
