"""ONNX export: ``onnx_from_model`` turns a preset or checkpoint into ``model.onnx`` + ``export.json``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from trtllm_kit.errors import ToolkitError
from trtllm_kit.export.manifest import ExportManifest, ExportRequest

log = logging.getLogger(__name__)
VALIDATE_BELOW_PARAMS = 1_000_000_000


@dataclass
class ExportResult:
    """What ``onnx_from_model`` wrote: the directory, the graph and its manifest."""

    out_dir: Path
    onnx_path: Path
    manifest: ExportManifest


def onnx_from_model(model: str, out: str | Path, dtype: str = "fp16", last_only: bool = True,
                    validate: bool | None = None, opset: int = 17, force: bool = False, seed: int | None = None,
                    progress: bool = True, loaded=None) -> ExportResult:
    """Export a preset or checkpoint to ``OUT/model.onnx`` with the KV cache as inputs and outputs.

    Args:
        model: preset name or local Hugging Face checkpoint directory.
        out: output directory, written atomically (a failed or interrupted export leaves nothing).
        dtype: ``fp16``, ``bf16`` or ``fp32``.
        last_only: output logits of the last position only.
        validate: compare with a reference through ONNX Runtime; default on below 1B parameters.
        opset: ONNX opset, one of ``graph.SUPPORTED_OPSETS``.
        force: replace an existing output directory (only one the toolkit created).
        seed: override a preset's weight seed.
        progress: show a progress bar on stderr (on a terminal).
        loaded: the model's (spec, weights) when the caller already loaded it.

    Raises:
        ToolkitError: unknown dtype/opset, an unusable ``out``, a model that cannot be loaded, or a
            failed validation.
    """
    import onnx

    from trtllm_kit import __version__
    from trtllm_kit.export.graph import ONNX_DTYPES, SUPPORTED_OPSETS, build_graph, save_model
    from trtllm_kit.export.io_spec import model_inputs, model_outputs
    from trtllm_kit.export.manifest import IORecord, WeightsRecord
    from trtllm_kit.export.validate import validate_onnx
    from trtllm_kit.models import load_model
    from trtllm_kit.utils.fs import atomic_dir, check_output_dir, sha256_file
    from trtllm_kit.utils.manifest import utc_now
    from trtllm_kit.utils.progress import progress_bar

    if dtype not in ONNX_DTYPES:
        raise ToolkitError(f"unknown dtype {dtype!r}", f"choose one of {', '.join(ONNX_DTYPES)}")
    if opset not in SUPPORTED_OPSETS:
        raise ToolkitError(f"--opset {opset} is not supported", f"use one of {', '.join(map(str, SUPPORTED_OPSETS))} "
                           "(TensorRT 8.6 reads up to 17)")
    check_output_dir(out, force, kind="export")
    if seed is not None and loaded is None:
        from trtllm_kit.models.presets import PRESETS

        if model not in PRESETS:
            raise ToolkitError("--seed only applies to presets (a checkpoint has its own weights)")
    spec, weights = loaded or load_model(model, seed)
    if validate is None:
        validate = spec.param_count() < VALIDATE_BELOW_PARAMS
    t0 = time.perf_counter()
    with atomic_dir(out, force=force, kind="export") as tmp:
        with progress_bar(total=spec.num_layers + 1, desc=f"export {spec.name}", unit="block", enabled=progress) as bar:
            proto, weights_sha = build_graph(spec, weights, dtype, last_only, tmp, opset,
                                             progress=lambda i: bar.update(1) if i else None)
            bar.update(1)
        onnx_path = tmp / "model.onnx"
        save_model(proto, onnx_path)
        del proto
        onnx.checker.check_model(str(onnx_path), full_check=True)
        export_s = time.perf_counter() - t0
        validation, skipped = None, None
        if validate:
            log.info("validating %s through ONNX Runtime against the fp32 reference", spec.name)
            if dtype == "bf16":
                skipped = "ONNX Runtime has no bf16 kernels on the CPU for this graph"
            else:
                validation = validate_onnx(onnx_path, spec, weights, dtype, last_only)
        manifest = ExportManifest(
            toolkit_version=__version__, model=model, spec=spec, params=spec.param_count(), blocks=spec.num_layers,
            weights=WeightsRecord(**weights.describe(), sha256=weights_sha), dtype=dtype, opset=opset,
            last_only_logits=last_only, external_data=(tmp / "model.onnx.data").exists(),
            onnx_sha256=sha256_file(onnx_path),
            files=sorted(p.name for p in tmp.iterdir()) + [ExportManifest.FILE],
            inputs=[IORecord.of(t, dtype) for t in model_inputs(spec)],
            outputs=[IORecord.of(t, dtype) for t in model_outputs(spec, last_only)],
            validation=validation, validation_skipped=skipped, export_seconds=round(export_s, 3), created=utc_now())
        manifest.save(tmp)
    out = Path(out).absolute()
    return ExportResult(out, out / "model.onnx", manifest)


def export_request(model: str, weights, dtype: str, last_only: bool, opset: int) -> ExportRequest:
    """The request an export of ``model`` with these options answers (see ``ExportManifest.request``)."""
    return ExportRequest(model=model, weights=weights.describe(), dtype=dtype, last_only_logits=last_only, opset=opset)
