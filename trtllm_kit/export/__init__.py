"""ONNX export: ``onnx_from_model`` turns a preset or checkpoint into ``model.onnx`` + ``export.json``."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from trtllm_kit.errors import ToolkitError

VALIDATE_BELOW_PARAMS = 1_000_000_000


@dataclass
class ExportResult:
    """What ``onnx_from_model`` wrote."""

    out_dir: Path
    onnx_path: Path
    metadata: dict


def onnx_from_model(model: str, out: str | Path, dtype: str = "fp16", last_only: bool = True,
                    validate: bool | None = None, opset: int = 17, force: bool = False, seed: int | None = None,
                    progress: bool = True) -> ExportResult:
    """Export a preset or checkpoint to ``OUT/model.onnx`` with the KV cache as inputs and outputs.

    Args:
        model: preset name or local Hugging Face checkpoint directory.
        out: output directory, written atomically.
        dtype: ``fp16``, ``bf16`` or ``fp32``.
        last_only: output logits of the last position only.
        validate: compare with the PyTorch reference in ONNX Runtime; default on below 1B parameters.
        opset: ONNX opset (>= 17).
        force: replace an existing output directory.
        seed: override a preset's weight seed.
        progress: show a progress bar on stderr.
    """
    import onnx
    from tqdm import tqdm

    from trtllm_kit import __version__
    from trtllm_kit.export.graph import ONNX_DTYPES, build_graph, save_model
    from trtllm_kit.export.io_spec import model_inputs, model_outputs
    from trtllm_kit.export.validate import validate_onnx
    from trtllm_kit.models import load_model
    from trtllm_kit.utils.fs import atomic_dir, write_json

    if dtype not in ONNX_DTYPES:
        raise ToolkitError(f"unknown dtype {dtype!r}", f"choose one of {', '.join(ONNX_DTYPES)}")
    if opset < 17:
        raise ToolkitError(f"opset {opset} is too old", "use opset 17 or newer")
    spec, weights = load_model(model, seed)
    if validate is None:
        validate = spec.param_count() < VALIDATE_BELOW_PARAMS
    t0 = time.perf_counter()
    with atomic_dir(out, force=force) as tmp:
        bar = tqdm(total=spec.num_layers, desc=f"export {spec.name}", unit="block", file=sys.stderr,
                   disable=not progress)
        proto, weights_sha = build_graph(spec, weights, dtype, last_only, tmp, opset,
                                         progress=lambda i: bar.update(1) if i else None)
        bar.update(1)
        bar.close()
        onnx_path = tmp / "model.onnx"
        save_model(proto, onnx_path)
        del proto
        onnx.checker.check_model(str(onnx_path), full_check=True)
        export_s = time.perf_counter() - t0
        validation = None
        if validate:
            validation = validate_onnx(onnx_path, spec, weights, dtype, last_only)
        meta = {
            "toolkit_version": __version__,
            "model": model,
            "spec": spec.to_dict(),
            "weights": {**weights.describe(), "sha256": weights_sha},
            "dtype": dtype,
            "opset": opset,
            "last_only_logits": last_only,
            "external_data": (tmp / "model.onnx.data").exists(),
            "files": sorted(p.name for p in tmp.iterdir()) + ["export.json"],
            "inputs": [{"name": t.name, "dtype": t.dtype if t.dtype == "int64" else dtype, "dims": list(t.dims)}
                       for t in model_inputs(spec)],
            "outputs": [{"name": t.name, "dtype": dtype, "dims": list(t.dims)} for t in model_outputs(spec, last_only)],
            "validation": validation,
            "export_seconds": round(export_s, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(tmp / "export.json", meta)
    out = Path(out).absolute()
    return ExportResult(out, out / "model.onnx", meta)


def read_export(onnx_dir: str | Path) -> dict:
    """Read ``export.json`` of an export directory, with a clear error when it is not one."""
    onnx_dir = Path(onnx_dir)
    meta = onnx_dir / "export.json"
    if not (onnx_dir / "model.onnx").is_file() or not meta.is_file():
        raise ToolkitError(f"{onnx_dir} is not an export directory (model.onnx and export.json expected)",
                           "create one with `trtllm-kit export MODEL --out DIR`")
    return json.loads(meta.read_text())
