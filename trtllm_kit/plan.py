"""One plan, one executor: a recipe or the ``bench`` flags become a ``Plan``; ``execute`` runs it.

export -> build -> bench (-> report), reusing artifacts whose inputs are unchanged. Everything that can
be checked without doing the work is checked in ``Plan.check`` first: backends, device, dtype, output
paths, models, and engines given directly against the sweep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from trtllm_kit.bench.backends import RunOptions, get_backend
from trtllm_kit.bench.results import BenchResults, SweepConfig
from trtllm_kit.engine.manifest import BuildOptions
from trtllm_kit.errors import ToolkitError

log = logging.getLogger(__name__)
DEVICE_HELP = "auto, cpu, cuda or cuda:N"


@dataclass(frozen=True)
class ExportOptions:
    """How models are exported for the ort and trt backends.

    Attributes:
        dtype: fp16, bf16 or fp32; None follows the export/engine directories given as models (fp16 if none).
    """

    dtype: str | None = None
    last_only: bool = True
    opset: int = 17


@dataclass
class Plan:
    """Everything a run does.

    Attributes:
        name: a label for logs and the report title.
        models: presets, checkpoints, export or engine directories.
        backends: registry names.
        work: where exports and engines made for the run go.
        results: the results JSON (a CSV twin goes beside it).
        report: the report directory, or None for no report.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        engine: build options; their limits default to what the sweep needs.
        limits_given: the engine limits the recipe set (``max_batch``, ...); ``limits_with`` fits the others to the
            sweep, again after ``bench`` changes the sweep.
    """

    name: str
    models: list[str]
    backends: list[str]
    work: Path
    results: Path
    report: Path | None = None
    device: str = "auto"
    export: ExportOptions = field(default_factory=ExportOptions)
    engine: BuildOptions | None = None
    sweep: SweepConfig = field(default_factory=SweepConfig)
    cuda_graph: bool = False
    recipe: str | None = None
    limits_given: dict[str, int] = field(default_factory=dict)  # the engine limits a recipe set; the rest fit the sweep
    kv_mode_flag: bool = False  # the engine's KV mode came from `bench --kv-mode`, not from the recipe

    def _resolve_dtype(self) -> str:
        """The run's dtype: the one asked for, else that of the export/engine directories given as models
        (all must agree), else fp16.

        Raises:
            ToolkitError: given exports/engines that mix dtypes, or one that disagrees with the dtype asked for
                (the run would time two dtypes under one label).
        """
        from trtllm_kit.engine.manifest import EngineManifest
        from trtllm_kit.export.manifest import ExportManifest

        found = {}
        for ref in self.models:
            p = Path(ref)
            for cls in (EngineManifest, ExportManifest):
                if (p / cls.FILE).is_file():
                    found[ref] = cls.load(p).dtype
                    break
        if self.export.dtype is None:
            if len(set(found.values())) > 1:
                raise ToolkitError(f"the given exports/engines mix dtypes "
                                   f"({', '.join(f'{k}: {v}' for k, v in found.items())})",
                                   "benchmark models of one dtype together, or pass --dtype")
            return next(iter(found.values()), "fp16")
        for ref, dtype in found.items():
            if dtype != self.export.dtype:
                raise ToolkitError(f"{ref} is a {dtype} export/engine but the run asks for --dtype {self.export.dtype}",
                                   f"pass --dtype {dtype}, or give the model itself")
        return self.export.dtype

    def check(self) -> RunOptions:
        """Check everything that needs no work; return the run options.

        Raises:
            ToolkitError: naming the flag or recipe key at fault.
        """
        from dataclasses import replace

        from trtllm_kit.bench.backends import parse_backends
        from trtllm_kit.utils.fs import check_output_dir, check_output_file, check_work_dir

        if not self.models:
            raise ToolkitError("no model given")
        self.backends = parse_backends(self.backends)
        device = resolve_device(self.device)
        if self.results.suffix != ".json":
            raise ToolkitError(f"--out {self.results}: give the results file's path, ending in .json")
        self.export = replace(self.export, dtype=self._resolve_dtype())
        for name in self.backends:
            reason = get_backend(name).unsupported(self.export.dtype, device)
            if reason:
                raise ToolkitError(f"backend {name} cannot run --dtype {self.export.dtype} on {device}: {reason}")
        if self.engine is None:
            self.engine = BuildOptions(limits=self.sweep.limits())
        self.engine.limits.checked()
        check_output_file(self.results, "--out", twins=(".csv",))
        check_work_dir(self.work)
        if self.report is not None:
            check_output_dir(self.report, force=True, flag="--out", kind="report")
        return RunOptions(device=device, dtype=self.export.dtype, cuda_graph=self.cuda_graph)


@dataclass
class Outcome:
    results: BenchResults
    results_path: Path
    report_path: Path | None
    notes: dict[str, str]


def limits_with(given: dict[str, int], sweep: SweepConfig):
    """Engine limits: those ``given`` (a recipe's ``engine.max_batch`` ...), the others what ``sweep`` needs
    (``SweepConfig.limits``); an opt point is derived only when its limit is derived too.

    Raises:
        ToolkitError: limits that contradict each other (``EngineLimits.checked``, when the caller checks).
    """
    from trtllm_kit.engine.limits import EngineLimits

    d = sweep.limits()
    return EngineLimits(given.get("max_batch") or d.max_batch, given.get("max_input") or d.max_input,
                        given.get("max_seq") or d.max_seq,
                        given.get("opt_batch") or (None if given.get("max_batch") else d.opt_batch),
                        given.get("opt_input") or (None if given.get("max_input") else d.opt_input))


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda[:N]`` only with that GPU.

    Raises:
        ToolkitError: an unknown device or a CUDA device that is not there.
    """
    import re

    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not m:
        raise ToolkitError(f"--device {device!r} is not a device", f"use {DEVICE_HELP}")
    if not torch.cuda.is_available():
        raise ToolkitError(f"--device {device}: no CUDA GPU is available", "use --device cpu")
    if m.group(1) and int(m.group(1)) >= torch.cuda.device_count():
        raise ToolkitError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) are visible")
    return device


def _grid(cfg: SweepConfig) -> list[tuple[int, int, int]]:
    """The sweep's (batch, input, output) points, each once."""
    return [(b, i, o) for b in cfg.batches for i in cfg.inputs for o in cfg.outputs]


def recipe_words(text: str, kv_mode_flag: bool = False) -> str:
    """A build message in a recipe's words: ``--gemm plugin`` -> ``engine.gemm: plugin`` (and ``--norm``, ``--rope``,
    ``--weights``, ``--kv-mode`` unless ``kv_mode_flag``: the KV mode came from ``bench --kv-mode``)."""
    import re

    keys = "gemm|norm|rope|weights" + ("" if kv_mode_flag else "|kv-mode")
    values = "auto|trt|plugin|portable-static|portable|inplace|inputs|engine"
    return re.sub(rf"--({keys})\b(?: ({values})\b)?",
                  lambda m: f"engine.{m.group(1).replace('-', '_')}" + (f": {m.group(2)}" if m.group(2) else ""), text)


def _check_engine_to_build(plan: Plan) -> None:
    """Before any export: the engines this run would build can be built with this machine's TensorRT and serve
    its sweep. Without a TensorRT that can build for this GPU at all the run goes on (its trt points say why).

    Raises:
        ToolkitError: the build options fail ``check_buildable`` (a plugin or layout this TensorRT cannot build,
            e.g. what ``--kv-mode auto`` chose refusing a plugin option), or the engine limits miss a sweep point
            (grid or step sweep).
    """
    from trtllm_kit.engine.builder import check_buildable, check_weights_dtype

    try:
        check_buildable(plan.engine)
        check_weights_dtype(plan.engine, plan.export.dtype)
    except ToolkitError as e:
        message, hint = e.message, e.hint
        if plan.recipe is not None:  # the options are the recipe's keys, not command-line flags
            message, hint = (recipe_words(t, plan.kv_mode_flag) if t else t for t in (message, hint))
        raise ToolkitError(f"the engine options cannot be built here: {message}",
                           f"{hint + '; ' if hint else ''}or leave trt out of the backends") from None
    lim, cfg = plan.engine.limits, plan.sweep
    points = [(f"batch {b}, input {i}, output {o}", b, i, o) for b, i, o in _grid(cfg)]
    points += [(f"step {n} tokens after {cfg.step_past}", n, cfg.step_past, 2) for n in cfg.step_tokens]
    for what, b, i, o in points:
        try:
            lim.check_point(b, i, o)
        except ToolkitError as e:
            raise ToolkitError(f"the engine limits miss the sweep point {what}: {e.message}",
                               "raise the engine limits (recipe engine: max_batch, max_input, max_seq), or leave "
                               "them out to fit the sweep") from None


def _check_engine_dirs(plan: Plan, arts) -> None:
    """An engine directory the run would build into that trtllm-kit did not create (or that holds another kind of
    artifact) is refused now, not noted after the export; one of its own is left to the build's reuse check.

    Raises:
        ToolkitError: naming the directory.
    """
    from trtllm_kit.utils.fs import inside, owner_record

    for art in arts:
        if "engine" in art.given:
            continue
        out = inside(plan.work, "engines", art.label)
        if out.is_dir() and any(out.iterdir()):
            rec = owner_record(out)
            if rec is None or rec.get("kind") != "engine":
                raise ToolkitError(f"engine directory {out} already exists and was not created by trtllm-kit as an "
                                   "engine; refusing to replace it", "move it away or choose another --work/out")
            _check_engine_rebuild(plan, out)


def _check_engine_rebuild(plan: Plan, out: Path) -> None:
    """An engine directory of the toolkit's that also holds a user's file can be reused, not replaced: when the
    run's build options already differ from the engine's (a changed recipe), the rebuild would refuse it after the
    export, so it is refused now. (A changed export is only known once exported; the build says so then.)

    Raises:
        ToolkitError: naming the directory, what differs and what the toolkit did not write.
    """
    from trtllm_kit.engine.manifest import EngineManifest
    from trtllm_kit.utils.fs import check_output_dir

    try:
        check_output_dir(out, force=True, flag="engine directory", kind="engine")  # could a rebuild replace it?
        return
    except ToolkitError as e:
        why = e.message
    if plan.engine is None:
        return
    try:
        have = EngineManifest.load(out).build.fingerprint()
    except ToolkitError:
        return  # not a readable engine: the build says what it is
    want = plan.engine.model_copy(update={"limits": plan.engine.limits.checked()}).fingerprint()
    changed = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    if changed:
        raise ToolkitError(f"the engine would be rebuilt ({', '.join(changed)} changed), but {why}",
                           "move the file out of that directory, or choose another --work/out")


def execute(plan: Plan, progress: bool = True) -> Outcome:
    """Run the plan: prepare artifacts, time the sweep, write results (and the report).

    Raises:
        ToolkitError: a plan that fails ``check``, models that cannot be resolved, an engine given directly that
            cannot serve the sweep, or engine options that cannot be built here or miss the sweep (before any
            export).
    """
    from trtllm_kit.bench.sweep import bench
    from trtllm_kit.pipeline import prepare_models, resolve_models

    opts = plan.check()
    from trtllm_kit.engine.manifest import EngineManifest

    builds = "trt" in plan.backends and any(not (Path(m) / EngineManifest.FILE).is_file() for m in plan.models)
    if builds:  # before the models are loaded: a 13B checkpoint takes minutes
        _check_engine_to_build(plan)
    arts = resolve_models(plan.models)  # also refuses a model given twice
    cfg = plan.sweep
    for art in arts:
        if "engine" in art.given and "trt" in plan.backends:
            lim = EngineManifest.load_engine_dir(art.engine_dir).limits
            for point in _grid(cfg):
                lim.check_point(*point)
    if builds:
        _check_engine_dirs(plan, arts)
        for art in arts:  # the builder refuses an engine longer than the model's context; say so before exporting
            most = art.spec.max_position_embeddings
            if "engine" not in art.given and plan.engine.limits.max_seq > most:
                raise ToolkitError(f"{art.label}: the engine would hold {plan.engine.limits.max_seq} positions "
                                   f"(max_seq), more than the model's max_position_embeddings {most}",
                                   f"keep the sweep's longest input + output within {most} (recipe sweep: inputs, "
                                   f"outputs; engine: max_seq), or leave trt out of the backends")
    log.info("%s: %d model(s), backends %s, device %s", plan.name, len(arts), ", ".join(plan.backends), opts.device)
    prepare_models(arts, plan.backends, plan.work, plan.export, plan.engine, progress)
    notes = {a.label: a.notes["engine"] for a in arts if "engine" in a.notes}
    results = bench(arts, plan.backends, cfg, plan.results, opts, progress,
                    extra={"recipe": plan.recipe, "engine_notes": notes})
    if not any(p.status == "ok" for p in results.points) and results.points:
        raise ToolkitError(f"nothing was timed (every point was skipped or failed; reasons in {plan.results})")
    report = None
    if plan.report is not None:
        from trtllm_kit.report import report_from_results

        report = report_from_results([plan.results], plan.report, title=f"trtllm-kit: {plan.name}")
    return Outcome(results, plan.results, report, notes)
