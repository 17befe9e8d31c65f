"""Artifacts for a model, made once and reused while their inputs are unchanged: export -> engine.

``bench`` and ``run`` accept a preset, a checkpoint, an export directory or an engine directory, and
get from here whatever each backend needs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from trtllm_kit import __version__
from trtllm_kit.errors import ToolkitError
from trtllm_kit.models.spec import ModelSpec


@dataclass
class ModelArtifacts:
    """What is known about one model: a label, its spec, and where its weights, ONNX and engine are."""

    label: str
    spec: ModelSpec
    model_ref: str | None = None  # preset name or checkpoint dir: what eager loads
    onnx_dir: Path | None = None
    engine_dir: Path | None = None

    def weights(self):
        from trtllm_kit.models import load_model

        if self.model_ref is None:
            raise ToolkitError(f"{self.label}: no weights to run eagerly (only an engine was given)")
        return load_model(self.model_ref)[1]


def resolve_model(ref: str) -> ModelArtifacts:
    """A preset, checkpoint, export directory or engine directory, as artifacts."""
    path = Path(ref)
    if (path / "engine.json").is_file():
        meta = json.loads((path / "engine.json").read_text())
        onnx_dir = Path(meta["source_onnx"]["path"]).parent
        return ModelArtifacts(meta["spec"]["name"], ModelSpec.from_dict(meta["spec"]), _usable_ref(meta["source_onnx"]["model"]),
                              onnx_dir if (onnx_dir / "export.json").is_file() else None, path)
    if (path / "export.json").is_file():
        meta = json.loads((path / "export.json").read_text())
        return ModelArtifacts(meta["spec"]["name"], ModelSpec.from_dict(meta["spec"]), _usable_ref(meta["model"]), path)
    from trtllm_kit.models import load_model

    spec, _ = load_model(ref)
    return ModelArtifacts(spec.name if not path.exists() else path.name, spec, ref)


def _usable_ref(ref: str | None) -> str | None:
    from trtllm_kit.models.presets import PRESETS

    if ref and (ref in PRESETS or (Path(ref) / "config.json").is_file()):
        return ref
    return None


def export_request(model_ref: str, dtype: str, last_only: bool, opset: int) -> dict:
    from trtllm_kit.models import load_model

    _, weights = load_model(model_ref)
    return {"model": model_ref, "dtype": dtype, "last_only_logits": last_only, "opset": opset,
            "toolkit_version": __version__, "weights": weights.describe()}


def ensure_export(art: ModelArtifacts, out: Path, dtype: str = "fp16", last_only: bool = True, opset: int = 17,
                  log=print) -> Path:
    """Export unless ``out`` already holds an export made from the same inputs; return its directory."""
    from trtllm_kit.export import onnx_from_model

    if art.onnx_dir is not None and art.model_ref is None:
        return art.onnx_dir
    req = export_request(art.model_ref, dtype, last_only, opset)
    meta_path = out / "export.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        have = {k: meta.get(k) for k in ("model", "dtype", "last_only_logits", "opset", "toolkit_version")}
        have["weights"] = {k: v for k, v in meta.get("weights", {}).items() if k != "sha256"}
        if have == req:
            log(f"reusing export {out} (inputs unchanged)")
            art.onnx_dir = out
            return out
    log(f"exporting {art.label} -> {out}")
    onnx_from_model(art.model_ref, out, dtype=dtype, last_only=last_only, opset=opset, force=True)
    art.onnx_dir = out
    return out


def ensure_engine(art: ModelArtifacts, out: Path, options, log=print) -> Path:
    """Build unless ``out`` holds an engine from the same ONNX, options and TensorRT version."""
    from trtllm_kit.engine.builder import engine_from_onnx
    from trtllm_kit.engine.flavors import detect_gpu, resolve_flavor
    from trtllm_kit.utils.fs import sha256_file

    if art.onnx_dir is None:
        raise ToolkitError(f"{art.label}: no ONNX export to build an engine from")
    meta_path = out / "engine.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        flavor = resolve_flavor(options.flavor, detect_gpu())
        same = (meta["build_options"] == asdict(options) and meta["trt_version"] == flavor.version
                and meta["flavor"] == flavor.name
                and meta["source_onnx"]["sha256"] == sha256_file(art.onnx_dir / "model.onnx")
                and meta["source_onnx"]["weights_sha256"] == json.loads((art.onnx_dir / "export.json").read_text())
                ["weights"]["sha256"])
        if same:
            log(f"reusing engine {out} (inputs unchanged)")
            art.engine_dir = out
            return out
    log(f"building engine {art.label} -> {out}")
    engine_from_onnx(art.onnx_dir, out, options, force=True)
    art.engine_dir = out
    return out


def prepare_models(refs: list[str], backends: list[str], work: Path, options, dtype: str = "fp16",
                   last_only: bool = True, opset: int = 17, log=print) -> tuple[list[ModelArtifacts], dict[str, str]]:
    """Resolve each model and make what its backends need: an export for ort/trt, an engine for trt.

    Artifacts given directly (an export or engine directory) are used as they are; the rest go under
    ``work/onnx/<label>`` and ``work/engines/<label>`` and are reused while their inputs are unchanged.
    An engine that cannot be built is noted, not fatal: the trt points then say why.

    Returns:
        The artifacts, and a note per model about its engine.
    """
    from trtllm_kit.engine.flavors import detect_gpu

    arts, notes = [], {}
    for ref in refs:
        art = resolve_model(str(ref))
        if ("ort" in backends or "trt" in backends) and art.onnx_dir is None:
            ensure_export(art, work / "onnx" / art.label, dtype=dtype, last_only=last_only, opset=opset, log=log)
        if "trt" in backends and art.engine_dir is None:
            try:
                ensure_engine(art, work / "engines" / art.label, options, log=log)
                if detect_gpu() is None:
                    notes[art.label] = "engine built (portable, no GPU); not timed: no GPU to run it"
            except ToolkitError as e:
                notes[art.label] = f"engine not built: {e}"
                log(f"note: {art.label}: {e}")
        arts.append(art)
    return arts, notes
