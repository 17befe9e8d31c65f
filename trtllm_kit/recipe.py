"""Recipes: one YAML file names the models, export and engine options, backends and sweep.

``run_recipe`` does export -> build -> bench -> report, reusing artifacts whose inputs are unchanged.
"""

from __future__ import annotations

import statistics
from dataclasses import fields
from pathlib import Path

import yaml

from trtllm_kit.errors import ToolkitError

TOP_KEYS = {"name", "description", "out", "device", "dtype", "models", "export", "engine", "backends", "sweep",
            "cuda_graph"}
EXPORT_KEYS = {"logits", "opset"}


def load_recipe(path: str | Path) -> dict:
    """Parse a recipe (``yaml.safe_load``: no code runs) and check its keys."""
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"recipe {path} does not exist", "see recipes/ for examples")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ToolkitError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ToolkitError(f"{path}: a recipe is a mapping with at least 'models' and 'backends'")
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise ToolkitError(f"{path}: unknown recipe key(s) {sorted(unknown)}", f"allowed: {sorted(TOP_KEYS)}")
    for key in ("models", "backends"):
        if not data.get(key) or not isinstance(data[key], list):
            raise ToolkitError(f"{path}: '{key}' must be a non-empty list")
    from trtllm_kit.bench.sweep import SweepConfig
    from trtllm_kit.engine.builder import BuildOptions

    allowed = {f.name for f in fields(SweepConfig)}
    bad = set(data.get("sweep") or {}) - allowed
    if bad:
        raise ToolkitError(f"{path}: unknown sweep key(s) {sorted(bad)}", f"allowed: {sorted(allowed)}")
    bad = set(data.get("engine") or {}) - {f.name for f in fields(BuildOptions)}
    if bad:
        raise ToolkitError(f"{path}: unknown engine key(s) {sorted(bad)}",
                           f"allowed: {sorted(f.name for f in fields(BuildOptions))}")
    bad = set(data.get("export") or {}) - EXPORT_KEYS
    if bad:
        raise ToolkitError(f"{path}: unknown export key(s) {sorted(bad)}", f"allowed: {sorted(EXPORT_KEYS)}")
    data.setdefault("name", path.stem)
    data["_path"] = str(path)
    return data


def sweep_config(recipe: dict):
    from trtllm_kit.bench.sweep import SweepConfig

    return SweepConfig(**(recipe.get("sweep") or {}))


def build_options(recipe: dict, sweep) -> "BuildOptions":  # noqa: F821
    """Engine options from the recipe, with profile limits defaulting to what the sweep needs."""
    from trtllm_kit.engine.builder import BuildOptions

    opts = dict(recipe.get("engine") or {})
    opts.setdefault("max_batch", max(max(sweep.batches), max(sweep.step_tokens or [1])))
    opts.setdefault("max_input", max(max(sweep.inputs), sweep.step_past if sweep.step_tokens else 1))
    opts.setdefault("max_seq", max(max(sweep.inputs) + max(sweep.outputs), sweep.step_past + 2))
    opts.setdefault("opt_batch", int(statistics.median_low(sorted(sweep.batches))))
    opts.setdefault("opt_input", min(sweep.inputs))
    return BuildOptions(**opts)


def run_recipe(path: str | Path, out: str | Path | None = None, log=print) -> dict:
    """Export -> build -> bench -> report for every model of the recipe.

    Returns:
        ``{"results": path, "report": path, "summary": [...]}``.
    """
    import torch

    from trtllm_kit.bench.sweep import bench
    from trtllm_kit.pipeline import prepare_models
    from trtllm_kit.report import report_from_results

    recipe = load_recipe(path)
    out = Path(out or recipe.get("out") or Path("artifacts") / recipe["name"])
    sweep = sweep_config(recipe)
    backends = recipe["backends"]
    exp = recipe.get("export") or {}
    dtype = recipe.get("dtype", "fp16")
    device = recipe.get("device", "auto")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    opts = build_options(recipe, sweep)
    log(f"recipe {recipe['name']}: {len(recipe['models'])} model(s), backends {', '.join(backends)}, device {device}")
    arts, notes = prepare_models(recipe["models"], backends, out, opts, dtype=dtype,
                                 last_only=exp.get("logits", "last") == "last", opset=exp.get("opset", 17), log=log)
    results, res_path = bench(arts, backends, sweep, out / "results.json", device=device, dtype=dtype,
                              cuda_graph=bool(recipe.get("cuda_graph", False)),
                              extra={"recipe": recipe["name"], "engine_notes": notes})
    html = report_from_results([res_path], out / "report", title=f"trtllm-kit: {recipe['name']}")
    return {"results": res_path, "report": html, "points": results["points"], "notes": notes}


def summary_lines(points: list[dict]) -> list[str]:
    """A short table for the terminal: one line per model x backend, throughput at each batch."""
    rows: dict = {}
    batches = sorted({p["batch"] for p in points})
    for p in points:
        key = (p["model"], p["backend"], p["input_len"], p["output_len"])
        val = f"{p['throughput_tok_s']:.0f}" if p["status"] == "ok" else p["status"]
        rows.setdefault(key, {})[p["batch"]] = val
    head = f"{'model':22} {'backend':8} {'in/out':8} " + " ".join(f"{'M' + str(b):>9}" for b in batches)
    lines = ["throughput (generated tokens/s) by batch size:", head]
    for (m, b, i, o), vals in sorted(rows.items()):
        lines.append(f"{m:22} {b:8} {f'{i}/{o}':8} " + " ".join(f"{vals.get(x, ''):>9}" for x in batches))
    return lines
