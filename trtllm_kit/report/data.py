"""The report's input: results files, typed, and what is known of every model they time.

A model label that occurs in more than one file (the same model timed on two machines, or twice) is given
one label per file, "tiny-llama [a.json]", in that file's models, points, checks and step rows: every
point stays traceable to its file, and nothing pairs points of two files because they share a label.

Results files written before ``trtllm-kit-bench/2`` record only a model's parameter and block counts;
where such a model's label is a preset name (and its parameter count matches the preset), its weight
bytes, family and per-block shapes are rebuilt from the preset registry. Anything else is "unknown".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from trtllm_kit.bench.results import BenchResults, Check, ModelRecord, Point, StepRow
from trtllm_kit.errors import ToolkitError
from trtllm_kit.models.spec import LayerSpec


@dataclass(frozen=True)
class ModelFacts:
    """What the report knows of one model.

    Attributes:
        label: the model's label in the results.
        params: parameter count.
        blocks: decoder blocks.
        weight_bytes: bytes of all weights in the results' dtype (None: unknown).
        family: ``bench.sweep.family_of`` of its spec (None: unknown).
        hidden_size: embedding width (None: unknown).
        layers: per-block shapes (None: unknown).
        source_layers: for a depth-pruned model, the index each kept block had in its source model.
        origin: where these facts come from, for the page.
        file: the results file that times it (``Source.name``).
        copy_of: its label in that file, where the page gives it a per-file label (None: the label is its own).
    """

    label: str
    params: int
    blocks: int
    weight_bytes: int | None = None
    family: str | None = None
    hidden_size: int | None = None
    layers: tuple[LayerSpec, ...] | None = None
    source_layers: tuple[int, ...] | None = None
    origin: str = "results file"
    file: str = ""
    copy_of: str | None = None

    @property
    def depth_pruned(self) -> bool:
        """Its blocks were picked out of a deeper model (``source_layers`` skips some)."""
        src = self.source_layers
        return src is not None and list(src) != list(range(len(src)))

    def shape_text(self) -> str:
        """One line on the per-block shapes: "6 x (4 heads x 16, MLP 160)" or the range per block."""
        if not self.layers:
            return "unknown"
        if len(set(self.layers)) == 1:
            la = self.layers[0]
            return f"{len(self.layers)} x ({la.n_heads} heads x {la.head_dim}, MLP {la.mlp_dim})"
        heads = [la.n_heads for la in self.layers]
        mlp = [la.mlp_dim for la in self.layers]
        return f"per block: heads {min(heads)}..{max(heads)}, MLP {min(mlp)}..{max(mlp)}"


def facts_from_record(rec: ModelRecord, dtype: str) -> ModelFacts:
    """A results file's model record as ``ModelFacts``; older records are completed from the preset registry.

    Args:
        rec: the record.
        dtype: the results' dtype (fp16, bf16, fp32): sets the bytes per weight of a rebuilt record.
    """
    if rec.spec is not None and rec.family is not None:
        return ModelFacts(rec.label, rec.params, rec.blocks, rec.weight_bytes, rec.family, rec.spec.get("hidden_size"),
                          tuple(LayerSpec(**la) for la in rec.spec.get("layers", [])),
                          tuple(rec.spec["source_layers"]) if rec.spec.get("source_layers") is not None else None)
    from trtllm_kit.bench.sweep import family_of
    from trtllm_kit.models.presets import PRESETS
    from trtllm_kit.utils.dtypes import DTYPE_BYTES

    preset = PRESETS.get(rec.label)
    spec = preset.spec() if preset else None
    if spec is None or spec.param_count() != rec.params:
        why = "not a preset name" if spec is None else "parameter count differs from the preset of that name"
        return ModelFacts(rec.label, rec.params, rec.blocks, rec.weight_bytes, origin=f"unknown ({why})")
    return ModelFacts(rec.label, rec.params, rec.blocks, spec.weight_bytes(DTYPE_BYTES.get(dtype, 2)), family_of(spec),
                      spec.hidden_size, spec.layers, spec.source_layers,
                      origin="preset registry (the results file predates per-model shapes)")


@dataclass
class Source:
    """One results file.

    Attributes:
        path: the JSON file.
        name: how the page names it (the file name, or parent/name where two files share a name).
        results: its typed content (model labels made distinct per file where they collide).
    """

    path: Path
    name: str
    results: BenchResults


@dataclass
class ReportData:
    """Results files merged for one report: their points, checks and step rows, and the models they time.

    Attributes:
        sources: the files, in the order given.
        models: every model by its label on the page.
        renamed: labels found in more than one file -> the files' names (their points carry per-file labels).
    """

    sources: list[Source]
    models: dict[str, ModelFacts]
    renamed: dict[str, list[str]] = field(default_factory=dict)

    @property
    def points(self) -> list[Point]:
        return [p for s in self.sources for p in s.results.points]

    @property
    def checks(self) -> list[Check]:
        return [c for s in self.sources for c in s.results.correctness]

    @property
    def steps(self) -> list[StepRow]:
        return [r for s in self.sources for r in s.results.step_sweep]

    @property
    def several(self) -> bool:
        """More than one results file: tables of points get a file column."""
        return len(self.sources) > 1

    @cached_property
    def _file(self) -> dict[int, str]:
        res = [(s.name, s.results) for s in self.sources]
        return {id(x): name for name, r in res for x in (*r.points, *r.correctness, *r.step_sweep)}

    def file_of(self, item: Point | Check | StepRow) -> str:
        """The name of the results file ``item`` (one of ``points``, ``checks`` or ``steps``) comes from."""
        return self._file[id(item)]


def _names(paths: list[Path]) -> list[str]:
    """How the page names each file: its name; parent/name where two share a name; " (n)" where even those do."""
    names = [p.name if [q.name for q in paths].count(p.name) == 1 else f"{p.parent.name}/{p.name}" for p in paths]
    return [n if names.count(n) == 1 else f"{n} ({names[:i].count(n) + 1})" for i, n in enumerate(names)]


def _labels(res: BenchResults) -> set[str]:
    """Every model label a results file uses."""
    return ({m.label for m in res.models} | {p.model for p in res.points} | {c.model for c in res.correctness}
            | {s.model for s in res.step_sweep})


def _relabel(res: BenchResults, new: dict[str, str]) -> BenchResults:
    """``res`` with model labels replaced (``new``: old label -> new label) in its models, points, checks, steps."""
    if not new:
        return res

    def ren(items: list, key: str) -> list:
        return [x.model_copy(update={key: new.get(getattr(x, key), getattr(x, key))}) for x in items]

    return res.model_copy(update={"models": ren(res.models, "label"), "points": ren(res.points, "model"),
                                  "correctness": ren(res.correctness, "model"),
                                  "step_sweep": ren(res.step_sweep, "model")})


def load_results(paths: list[str | Path]) -> ReportData:
    """Read results files (``results.json`` or their directories) for one report.

    A label that occurs in more than one file becomes "label [file name]" in each (see the module docstring).

    Raises:
        ToolkitError: a file is missing or not a results file (see ``BenchResults.load``), or no file has a point
            (an empty report is not worth writing).
    """
    loaded = [(BenchResults.path_in(p), BenchResults.load(p)) for p in paths]
    if not any(res.points for _, res in loaded):
        files = [str(p) for p, _ in loaded]
        what = f"{files[0]} has" if len(files) == 1 else f"{', '.join(files[:-1])} and {files[-1]} have"
        raise ToolkitError(f"{what} no timed points, so there is nothing to report",
                           "run `trtllm-kit bench`; a sweep saves results.partial.json after each point")
    names = _names([p for p, _ in loaded])
    seen: dict[str, list[str]] = {}
    for name, (_, res) in zip(names, loaded):
        for label in sorted(_labels(res)):
            seen.setdefault(label, []).append(name)
    renamed = {label: files for label, files in seen.items() if len(files) > 1}
    sources, models = [], {}
    for name, (path, res) in zip(names, loaded):
        new = {label: f"{label} [{name}]" for label in _labels(res) if label in renamed}
        for rec in res.models:
            facts = replace(facts_from_record(rec, res.dtype), file=name)
            label = new.get(rec.label, rec.label)
            models.setdefault(label, replace(facts, label=label, copy_of=rec.label if label != rec.label else None))
        sources.append(Source(path, name, _relabel(res, new)))
    return ReportData(sources, models, renamed)
