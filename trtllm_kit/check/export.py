"""``check EXPORT_DIR``: ONNX Runtime (CPU) against the PyTorch reference, step by step or layer-wise."""

from __future__ import annotations

from pathlib import Path

from trtllm_kit.check.compare import compare_step, tolerances
from trtllm_kit.check.feeds import generation_steps, prefill_step
from trtllm_kit.check.results import CheckResult, LayerwiseResult
from trtllm_kit.check.runners import ReferenceRunner, onnxrt_runner
from trtllm_kit.errors import ToolkitError


def check_export(export_dir: Path, layerwise: bool, rtol: float | None, atol: float | None, batch: int,
                 prompt_len: int, decode_steps: int, seed: int, setup: str) -> CheckResult | LayerwiseResult:
    """ONNX Runtime on ``EXPORT_DIR/model.onnx`` against the fp32 PyTorch reference (see ``check_path``).

    Raises:
        ToolkitError: a bf16 export (no CPU kernels), prompts beyond the rotary table, or a reference
            that cannot be rebuilt (``reference_model``).
    """
    from trtllm_kit.export.manifest import ExportManifest
    from trtllm_kit.runtime.ort import check_positions

    m = ExportManifest.load(export_dir)
    if m.dtype == "bf16":
        raise ToolkitError("ONNX Runtime has no bf16 kernels on the CPU for this graph",
                           "check an fp16 or fp32 export, or the engine built from this one")
    check_positions(m.spec, prompt_len + decode_steps)
    model = reference_model(m)
    rtol, atol = tolerances(m.dtype, rtol, atol)
    if layerwise:
        from trtllm_kit.check.layerwise import layerwise_export

        step = prefill_step(m.spec, m.dtype, batch, prompt_len, seed)
        return layerwise_export(export_dir, step, model, rtol, atol, setup)
    ref = ReferenceRunner(model, m.spec, m.dtype, m.last_only_logits)
    ort = onnxrt_runner(export_dir / "model.onnx")
    steps = generation_steps(ref, m.spec, m.dtype, batch, prompt_len, decode_steps, seed)
    result = CheckResult(f"onnxrt ({m.dtype}, CPU)", "reference (PyTorch fp32)", [s.label for s in steps], setup,
                         rtol, atol)
    for step in steps:
        result.add(compare_step(step.label, ort, step.feed, ref, step.feed, rtol, atol))
    return result


def reference_model(m):
    """The fp32 PyTorch reference of an export, from the preset or checkpoint it was made from.

    Raises:
        ToolkitError: that model is gone, or its weights changed since the export.
    """
    from trtllm_kit.models import load_model
    from trtllm_kit.models.presets import PRESETS
    from trtllm_kit.models.reference import reference_from_weights

    w = m.weights.model_dump(exclude={"sha256"})
    ref = w.get("path") if w.get("kind") == "checkpoint" else m.model
    if not ref or not (ref in PRESETS or (Path(ref) / "config.json").is_file()):
        raise ToolkitError(f"the model this export was made from ({m.model}) is not available, and the reference "
                           "needs its weights", "check an engine built from it against ONNX Runtime instead")
    _, weights = load_model(ref, w.get("seed") if w.get("kind") == "seeded-random" else None)
    if weights.describe() != w:
        raise ToolkitError(f"the weights of {ref} changed since the export was made", "export it again")
    return reference_from_weights(m.spec, weights)
