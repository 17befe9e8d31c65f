"""Recipes: one YAML file names the models, export and engine options, backends and sweep.

The whole recipe is validated against a schema before any work (unknown keys, wrong types and values
are one error naming the key); ``plan_from_recipe`` turns it into the ``Plan`` that ``execute`` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, field_validator, model_validator

from trtllm_kit.bench.results import SweepConfig
from trtllm_kit.errors import ToolkitError
from trtllm_kit.plan import ExportOptions, Plan, limits_with
from trtllm_kit.utils.manifest import Record


class Strict(Record):
    model_config = ConfigDict(extra="forbid", strict=True)


class RecipeExport(Strict):
    logits: Literal["last", "all"] = "last"
    opset: Literal[17, 18, 19, 20, 21] = 17


class RecipeEngine(Strict):
    """Engine options; limits left out are derived from the sweep."""

    flavor: Literal["auto", "tensorrt", "tensorrt-rtx"] = "auto"
    kv_mode: Literal["auto", "portable", "portable-static", "inplace", "plugin"] = "auto"
    profiles: Literal["split", "single"] = "split"
    max_batch: PositiveInt | None = None
    max_input: PositiveInt | None = None
    max_seq: PositiveInt | None = None
    opt_batch: PositiveInt | None = None
    opt_input: PositiveInt | None = None
    opt_level: int | None = Field(None, ge=0, le=5)
    workspace_gb: PositiveFloat | None = None
    timing_cache: str | None = None
    trt_include: str | None = None
    weights: Literal["engine", "inputs"] = "engine"
    gemm: Literal["auto", "trt", "plugin"] = "auto"
    norm: Literal["auto", "trt", "plugin"] = "auto"
    rope: Literal["auto", "trt", "plugin"] = "auto"

    @model_validator(mode="after")
    def _plugins_need(self):
        from trtllm_kit.engine.gemm import plugin_option_conflicts  # the builder's rule, in the recipe's words

        needs = {"gemm": ("kv_mode: plugin or portable-static, and weights: inputs",
                          f"kv_mode: {self.kv_mode}, weights: {self.weights}"),
                 "norm": ("kv_mode: plugin, portable or portable-static", f"kv_mode: {self.kv_mode}"),
                 "rope": ("kv_mode: plugin or portable-static", f"kv_mode: {self.kv_mode}")}
        conflicts = plugin_option_conflicts(self.gemm, self.norm, self.kv_mode, self.weights, rope=self.rope)
        if conflicts:
            option = next(iter(conflicts))
            need, got = needs[option]
            raise ValueError(f"{option}: plugin needs {need} (or {option}: auto or trt), got {got}")
        return self


class RecipeSweep(SweepConfig):
    model_config = ConfigDict(extra="forbid", strict=True)


class Recipe(Strict):
    """A recipe file (see recipes/*.yaml)."""

    name: str | None = Field(None, pattern=r"^[\w.+-]+$")
    description: str | None = None
    out: str | None = None
    device: str = "auto"
    dtype: Literal["fp16", "bf16", "fp32"] | None = None
    models: list[str] = Field(min_length=1)
    backends: list[str] = Field(min_length=1)
    export: RecipeExport = RecipeExport()
    engine: RecipeEngine = RecipeEngine()
    sweep: RecipeSweep = RecipeSweep()
    cuda_graph: bool = False

    @field_validator("backends")
    @classmethod
    def _known_backends(cls, v):
        from trtllm_kit.bench.backends import BACKENDS

        bad = [b for b in v if b not in BACKENDS]
        if bad:
            raise ValueError(f"unknown backend(s) {bad}; choose from {list(BACKENDS)}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        import re

        if v not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", v):
            raise ValueError("expected auto, cpu, cuda or cuda:N")
        return v


def load_recipe(path: str | Path) -> Recipe:
    """Parse (``yaml.safe_load``: no code runs) and validate a recipe.

    Raises:
        ToolkitError: a missing file, invalid YAML, or the first schema violation, naming its key.
    """
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"recipe {path} does not exist", "see recipes/ for examples")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ToolkitError(f"{path} is not UTF-8 text (byte {e.start}); a recipe is a YAML file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)  # where the parser gave up (0-based), as an editor shows it
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ToolkitError(f"{path} is not valid YAML{where}: {what}") from None
    if not isinstance(data, dict):
        raise ToolkitError(f"{path}: a recipe is a mapping with at least 'models' and 'backends'")
    try:
        rec = Recipe.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        shown = err["type"] not in ("missing", "extra_forbidden") and not isinstance(err["input"], dict)
        got = f" (got {err['input']!r})" if shown else ""
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":  # name the keys that section takes
            section = Recipe
            for part in err["loc"][:-1]:
                field = section.model_fields.get(str(part)) if isinstance(section, type) else None
                section = field.annotation if field is not None else None
            keys = sorted(section.model_fields) if isinstance(section, type) and issubclass(section, BaseModel) else []
            msg = "unknown key" + (f" (this section takes: {', '.join(keys)})" if keys else "")
        else:
            msg = msg[0].lower() + msg[1:]
        raise ToolkitError(f"{path}: {key}: {msg}{got}") from None
    if rec.name is None:
        rec = rec.model_copy(update={"name": path.stem})
    return rec


def plan_from_recipe(path: str | Path, out: str | Path | None = None) -> Plan:
    """The plan a recipe describes (``out`` overrides the recipe's output directory).

    Raises:
        ToolkitError: see ``load_recipe``, and engine limits that contradict each other.
    """
    from trtllm_kit.engine.manifest import BuildOptions

    rec = load_recipe(path)
    out = Path(out or rec.out or Path("artifacts") / rec.name).expanduser()
    sweep = SweepConfig(**rec.sweep.model_dump())
    e = rec.engine
    given = {k: getattr(e, k) for k in ("max_batch", "max_input", "max_seq", "opt_batch", "opt_input") if getattr(e, k)}
    limits = limits_with(given, sweep)
    engine = BuildOptions(flavor=e.flavor, kv_mode=e.kv_mode, profiles=e.profiles, limits=limits, opt_level=e.opt_level,
                          workspace_gb=e.workspace_gb, timing_cache=e.timing_cache, trt_include=e.trt_include,
                          weights=e.weights, gemm=e.gemm, norm=e.norm, rope=e.rope)
    return Plan(name=rec.name, models=[str(Path(m).expanduser()) if m.startswith("~") else m for m in rec.models], backends=list(rec.backends), work=out,
                results=out / "results.json", report=out / "report", device=rec.device,
                export=ExportOptions(rec.dtype, rec.export.logits == "last", rec.export.opset), engine=engine,
                sweep=sweep, cuda_graph=rec.cuda_graph, recipe=rec.name, limits_given=given)


def summary_lines(results) -> list[str]:
    """A short table for the terminal: throughput by batch per model x backend, then the reason for every
    point, step and correctness check that did not come out ok, and how many points look noisy.

    A cell that was not timed reads ``status [n]``, and note ``[n]`` below gives its reason.
    """
    from trtllm_kit.report.trust import trust_flags

    def why(x) -> tuple:
        return (x.model, x.backend, x.status, x.message or "no reason recorded")

    points = results.points
    reasons: dict[tuple, list[str]] = {}
    for p in points:
        if p.status != "ok":
            reasons.setdefault(why(p), []).append(f"M{p.batch}")
    for s in results.step_sweep:
        if s.status != "ok":
            reasons.setdefault(why(s), []).append(f"step {s.tokens}")
    note = {key: i + 1 for i, key in enumerate(reasons)}
    rows: dict = {}
    batches = sorted({p.batch for p in points})
    for p in points:
        key = (p.model, p.backend, p.input_len, p.output_len)
        cell = f"{p.throughput_tok_s:.0f}" if p.status == "ok" else f"{p.status} [{note[why(p)]}]"
        rows.setdefault(key, {})[p.batch] = cell
    width = max([len(k[0]) for k in rows] + [5])
    cell = max([len(v) for r in rows.values() for v in r.values()] + [9])
    head = f"{'model':{width}} {'backend':8} {'in/out':8} " + " ".join(f"{'M' + str(b):>{cell}}" for b in batches)
    lines = ["throughput (generated tokens/s) by batch size:", head]
    for (m, b, i, o), vals in sorted(rows.items()):
        lines.append(f"{m:{width}} {b:8} {f'{i}/{o}':8} " + " ".join(f"{vals.get(x, ''):>{cell}}" for x in batches))
    if reasons:
        lines.append("not timed:")
        for key, where in reasons.items():
            m, b, status, msg = key
            lines.append(f"  [{note[key]}] {m} / {b} ({', '.join(where)}): {status}: {msg}")
    bad = [c for c in results.correctness if c.status == "ok" and c.matches_eager is False]
    for c in bad:
        lines.append(f"tokens differ from eager: {c.model} / {c.backend} from token {c.first_mismatch} on")
    flagged = {id(f.point) for f in trust_flags(points)}
    if flagged:
        lines.append(f"{len(flagged)} timed point(s) look noisy (large p90/p50 spread, or latency falling as the batch "
                     "grows): see the report's 'Can I trust the numbers?'; more timed runs on a quieter machine help")
    return lines
