"""Run settings and environment, once: a value all results files share is one row; where they differ,
the row lists each file's value."""

from __future__ import annotations

from trtllm_kit.report.data import ReportData, Source
from trtllm_kit.report.tables import Table

PAPER_PROTOCOL = "The paper times fp16 models with 10 warm-up and 20 timed runs per point"


def _device(src: Source) -> str:
    env = src.results.env
    name = env.get("device") or "not recorded"
    extra = [f"compute capability {env['compute_capability']}" if env.get("compute_capability") else "",
             f"{env['gpu_memory_gb']} GB" if env.get("gpu_memory_gb") else ""]
    timed_on = sorted({p.device for p in src.results.points if p.status == "ok"})
    where = f"; points timed on {', '.join(timed_on)}" if timed_on else ""
    return name + "".join(f", {e}" for e in extra if e) + where


def _grid(src: Source) -> str:
    c = src.results.config
    return (f"batch {', '.join(map(str, c.batches))}; input {', '.join(map(str, c.inputs))}; "
            f"output {', '.join(map(str, c.outputs))} tokens")


def _env(key: str):
    return lambda src: (str(src.results.env[key]) if src.results.env.get(key) is not None else None)


# (setting, how to read it from one results file); None: the file does not record it.
SETTINGS = (
    ("dtype", lambda s: s.results.dtype),
    ("warm-up runs per point", lambda s: str(s.results.config.warmup)),
    ("timed runs per point", lambda s: str(s.results.config.repeats)),
    ("grid", _grid),
    ("backends", lambda s: ", ".join(s.results.backends)),
    ("device", _device),
    ("CUDA", _env("cuda")),
    ("driver", _env("driver")),
    ("torch", _env("torch")),
    ("transformers", _env("transformers")),
    ("onnxruntime", _env("onnxruntime")),
    ("TensorRT", _env("tensorrt")),
    ("TensorRT-RTX", _env("tensorrt-rtx")),
    ("trtllm-kit", _env("toolkit")),
    ("git commit", _env("git_commit")),
    ("python", _env("python")),
    ("platform", _env("platform")),
    ("CPU cores", _env("cpu_count")),
    ("recipe", lambda s: s.results.recipe),
    ("wall time", lambda s: f"{s.results.wall_s:.0f} s" if s.results.wall_s is not None else None),
    ("started", _env("time")),
    ("command", _env("command")),
)


def settings_rows(data: ReportData) -> list[tuple[str, list[tuple[str | None, str]]]]:
    """(setting, values): ``[(None, value)]`` when every results file agrees, else one (file, value) each.

    A setting no file records is left out; a file that does not record it reads "not recorded".
    """
    out = []
    for name, read in SETTINGS:
        vals = [(s.name, read(s)) for s in data.sources]
        if all(v is None for _, v in vals):
            continue
        vals = [(src, v if v is not None else "not recorded") for src, v in vals]
        out.append((name, [(None, vals[0][1])] if len({v for _, v in vals}) == 1 else vals))
    return out


def settings_table(data: ReportData) -> Table:
    """The settings as a two-column table (a value per file, one per line, where the files differ)."""
    rows = [[name, "\n".join(v if src is None else f"{src}: {v}" for src, v in vals)]
            for name, vals in settings_rows(data)]
    few = sorted({s.results.config.repeats for s in data.sources if s.results.config.repeats < 10})
    notes = [f"{PAPER_PROTOCOL}. A point's latency is one batched generation (prefill and every decode step, device "
             "synchronised); the sweep table gives the mean, p50 and p90 of its timed runs, and throughput at the "
             "mean (batch x output tokens / mean latency). Speed-ups and comparisons use p50."]
    if few:
        notes.append(f"{' and '.join(map(str, few))} timed runs per point is few: p90 is (nearly) the slowest run and "
                     "one disturbed run moves the mean; see 'Can I trust the numbers?'.")
    return Table("settings", "Settings and environment", ["setting", "value"], rows, text=2, notes=notes)
