"""Artifacts for a model, made once and reused while their inputs are unchanged: export -> engine.

``bench`` and ``run`` accept a preset, a checkpoint, an export directory or an engine directory, and
get from here whatever each backend needs. Output paths come only from ``--work``/``--out`` and a
sanitized, unique label per model; never from model metadata. Reuse and ``--force`` only ever replace
directories the toolkit created.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from trtllm_kit.errors import ToolkitError
from trtllm_kit.models.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class ModelArtifacts:
    """What is known about one model: a label, its spec, and where its weights, ONNX and engine are.

    Attributes:
        label: unique among the models of a run, safe as a path component.
        model_ref: the preset name or checkpoint directory eager loads (None: only artifacts given).
        given: artifacts the user gave directly (``onnx``, ``engine``): used as they are, never rebuilt.
        notes: why an artifact is missing (e.g. an engine that could not be built).
    """

    label: str
    spec: ModelSpec
    model_ref: str | None = None
    onnx_dir: Path | None = None
    engine_dir: Path | None = None
    given: set[str] = field(default_factory=set)
    notes: dict[str, str] = field(default_factory=dict)
    _weights: object = None
    ref: str | None = None  # the model as the user gave it (preset, checkpoint, export or engine directory)

    def weights(self):
        """The weight source, loaded once."""
        if self._weights is None:
            from trtllm_kit.models import load_model

            if self.model_ref is None:
                raise ToolkitError(f"{self.label}: no weights to run eagerly (only an export or engine was given)")
            self.spec, self._weights = load_model(self.model_ref)
        return self._weights

    def missing(self, backend) -> str | None:
        """Why this model lacks what ``backend`` needs (None: it has everything)."""
        have = {"weights": self.model_ref is not None, "onnx": self.onnx_dir is not None,
                "engine": self.engine_dir is not None}
        for need in backend.needs:
            if not have[need]:
                return self.notes.get(need) or f"no {need} for the {backend.name} backend"
        return None


def resolve_model(ref: str) -> ModelArtifacts:
    """A preset, checkpoint, export directory or engine directory, as artifacts (label not yet unique).

    Raises:
        ToolkitError: a reference that is none of these, or an artifact of another format.
    """
    from trtllm_kit.engine.manifest import EngineManifest
    from trtllm_kit.export.manifest import ExportManifest
    from trtllm_kit.utils.fs import safe_component

    path = Path(ref)
    if (path / EngineManifest.FILE).is_file():
        m = EngineManifest.load_engine_dir(path)
        onnx_dir = Path(m.source.export_dir)
        return ModelArtifacts(safe_component(m.spec.name), m.spec, _usable_ref(m.source.model),
                              onnx_dir if (onnx_dir / ExportManifest.FILE).is_file() else None, path.absolute(),
                              given={"engine"})
    if (path / ExportManifest.FILE).is_file():
        m = ExportManifest.load(path)
        return ModelArtifacts(safe_component(m.spec.name), m.spec, _usable_ref(m.model), path.absolute(), given={"onnx"})
    from trtllm_kit.models import load_model

    spec, weights = load_model(ref)
    return ModelArtifacts(safe_component(path.absolute().name if path.exists() else spec.name), spec, ref,
                          _weights=weights)


def _usable_ref(ref: str | None) -> str | None:
    """A model reference from metadata, kept only if it still names a preset or a checkpoint (read-only use)."""
    from trtllm_kit.models.presets import PRESETS

    if ref and (ref in PRESETS or (Path(ref) / "config.json").is_file()):
        return ref
    return None


def unique_labels(refs: list[str], arts: list[ModelArtifacts]) -> None:
    """Make labels unique: models sharing a directory name get parent directories prefixed
    (``dense/ckpt`` and ``pruned/ckpt`` -> ``dense-ckpt``, ``pruned-ckpt``), then a counter."""
    from trtllm_kit.utils.fs import safe_component

    for depth in range(1, 4):
        counts: dict[str, int] = {}
        for a in arts:
            counts[a.label] = counts.get(a.label, 0) + 1
        dupes = {k for k, n in counts.items() if n > 1}
        if not dupes:
            return
        for ref, a in zip(refs, arts):
            if a.label in dupes and Path(ref).exists():
                parts = Path(ref).absolute().parts[-(depth + 1):]
                a.label = safe_component("-".join(parts))
    seen: dict[str, int] = {}
    for a in arts:
        n = seen.get(a.label, 0)
        seen[a.label] = n + 1
        if n:
            a.label = f"{a.label}-{n + 1}"


def resolve_models(refs: list[str]) -> list[ModelArtifacts]:
    """Every model of a run, with unique labels; each remembers the reference it was given as.

    Raises:
        ToolkitError: a model given twice (the same preset or the same directory), or one that cannot be resolved.
    """
    keys = [str(Path(r).resolve()) if Path(r).exists() else str(r) for r in refs]
    for k in keys:
        if keys.count(k) > 1:
            raise ToolkitError(f"model {k} is given twice")
    arts = [resolve_model(str(r)) for r in refs]
    for art, r in zip(arts, refs):
        art.ref = str(r)
    unique_labels([str(r) for r in refs], arts)
    return arts


def ensure_export(art: ModelArtifacts, out: Path, dtype: str = "fp16", last_only: bool = True, opset: int = 17,
                  progress: bool = True) -> Path:
    """Export unless ``out`` already holds an export made from the same request, whole (``verify_onnx``); return its
    directory.

    Raises:
        ToolkitError: ``out`` holds something the toolkit did not create, or the export fails.
    """
    from trtllm_kit.export import export_request, onnx_from_model
    from trtllm_kit.export.manifest import ExportManifest
    from trtllm_kit.utils.fs import owned_by_toolkit

    if "onnx" in art.given or art.model_ref is None:
        return art.onnx_dir
    req = export_request(art.model_ref, art.weights(), dtype, last_only, opset)
    if (out / ExportManifest.FILE).is_file() and owned_by_toolkit(out, "export"):
        try:
            m = ExportManifest.load(out)
            if m.request() == req:
                m.verify_onnx(out)  # the graph unchanged and its weights file whole (not deleted or cut short)
                log.info("reusing export %s (inputs unchanged)", out)
                art.onnx_dir = out
                return out
        except ToolkitError as e:
            log.info("not reusing %s: %s", out, e)
    log.info("exporting %s -> %s", art.label, out)
    onnx_from_model(art.model_ref, out, dtype=dtype, last_only=last_only, opset=opset, force=True, progress=progress,
                    loaded=(art.spec, art.weights()))
    art.onnx_dir = out
    return out


def ensure_engine(art: ModelArtifacts, out: Path, options, progress: bool = True) -> Path:
    """Build unless ``out`` holds an engine from the same ONNX, options and TensorRT version.

    Raises:
        ToolkitError: no export to build from, or the build fails.
    """
    from trtllm_kit.engine.builder import engine_from_onnx
    from trtllm_kit.engine.flavors import detect_gpu, resolve_flavor
    from trtllm_kit.engine.manifest import EngineManifest
    from trtllm_kit.export.manifest import ExportManifest
    from trtllm_kit.utils.fs import owned_by_toolkit, sha256_file

    if "engine" in art.given:
        return art.engine_dir
    if art.onnx_dir is None:
        raise ToolkitError(f"{art.label}: no ONNX export to build an engine from")
    why = ""
    if (out / EngineManifest.FILE).is_file() and owned_by_toolkit(out, "engine"):
        try:
            flavor = resolve_flavor(options.flavor, detect_gpu())
            changed = EngineManifest.load(out).differences(options, flavor.name, flavor.version,
                                                           sha256_file(art.onnx_dir / "model.onnx"),
                                                           ExportManifest.load(art.onnx_dir).weights.sha256)
            if not changed:
                log.info("reusing engine %s (inputs unchanged)", out)
                art.engine_dir = out
                return out
            why = f" (rebuilding: {', '.join(changed)})"
        except ToolkitError as e:
            log.info("not reusing %s: %s", out, e)
    log.info("building engine %s -> %s%s", art.label, out, why)
    engine_from_onnx(art.onnx_dir, out, options, force=True, progress=progress)
    art.engine_dir = out
    return out


def prepare_models(arts: list[ModelArtifacts], backends: list[str], work: Path, export_opts, build_opts,
                   progress: bool = True) -> None:
    """Make what each model's backends need under ``work/onnx/<label>`` and ``work/engines/<label>``.

    Artifacts given directly are used as they are. An engine that cannot be built is noted on the model
    (its trt points then say why), not fatal.
    """
    from trtllm_kit.bench.backends import get_backend
    from trtllm_kit.utils.fs import inside

    needs = {n for b in backends for n in get_backend(b).needs}
    for art in arts:
        if ("onnx" in needs or ("engine" in needs and art.engine_dir is None)) and art.onnx_dir is None:
            ensure_export(art, inside(work, "onnx", art.label), export_opts.dtype, export_opts.last_only,
                          export_opts.opset, progress)
        if "engine" in needs and art.engine_dir is None:
            try:
                ensure_engine(art, inside(work, "engines", art.label), build_opts, progress)
            except ToolkitError as e:
                art.notes["engine"] = f"engine not built: {e}"
                log.warning("%s: %s", art.label, art.notes["engine"])
