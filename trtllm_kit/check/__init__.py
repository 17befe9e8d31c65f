"""``trtllm-kit check``: one prefill and a few decode steps fed identically to two runners, compared by
Polygraphy's comparator.

- ``check EXPORT_DIR``: ONNX Runtime (CPU) against the PyTorch reference module (fp32) built from the
  weights the export was made from (the preset or checkpoint named in ``export.json``), never from the
  exported graph itself, so a graph that corrupts its weights fails.
- ``check ENGINE_DIR``: TensorRT against ONNX Runtime on the export the engine was built from.
- ``--layerwise``: the graph's anchor tensors block by block (see ``check.layerwise``).

The inputs are the project's generation inputs: a left-padded batch, positions from the mask, greedy
decode steps whose past KV comes from the reference's previous step and is fed, as the same arrays, to
both runners (see ``check.feeds``). Polygraphy is imported only here, lazily (``check.tools``).
"""

from __future__ import annotations

from pathlib import Path

from trtllm_kit.check.results import CheckResult, LayerwiseResult, OutputStat
from trtllm_kit.check.tools import require_polygraphy
from trtllm_kit.errors import ToolkitError

__all__ = ["CheckResult", "LayerwiseResult", "OutputStat", "check_path", "require_polygraphy"]


def check_path(path: str | Path, layerwise: bool = False, rtol: float | None = None, atol: float | None = None,
               batch: int = 3, prompt_len: int = 9, decode_steps: int = 3,
               seed: int = 0) -> CheckResult | LayerwiseResult:
    """Check an export directory (ONNX Runtime vs PyTorch) or an engine directory (TensorRT vs ONNX Runtime).

    Args:
        path: written by ``trtllm-kit export`` or ``trtllm-kit build``.
        layerwise: compare the anchor tensors of one prefill block by block instead.
        rtol, atol: override the tolerances of the candidate's precision (``compare.TOLERANCES``).
        batch: prompts, row ``b`` left-padded by ``2 * b`` tokens. prompt_len: tokens per prompt.
        decode_steps: greedy steps after the prefill. seed: prompt seed.

    Returns:
        The comparison; ``raise_if_failed()`` turns a mismatch into the one-line error.

    Raises:
        ToolkitError: not an export or engine directory, Polygraphy missing, or a model or engine that
            cannot run here (say, an engine without a GPU).
    """
    from trtllm_kit.engine.manifest import EngineManifest
    from trtllm_kit.export.manifest import ExportManifest

    path = Path(path)
    if batch < 1 or prompt_len < 1 or decode_steps < 0:
        raise ToolkitError("batch and prompt length must be at least 1, decode steps at least 0")
    is_engine = (path / EngineManifest.FILE).is_file()
    if not is_engine and not (path / ExportManifest.FILE).is_file():
        raise ToolkitError(f"{path} is neither an export directory (no export.json) nor an engine directory "
                           "(no engine.json)", "make one with `trtllm-kit export` or `trtllm-kit build`")
    require_polygraphy()  # before any module of this package that imports Polygraphy
    if is_engine:
        from trtllm_kit.check.engine import check_engine as fn
    else:
        from trtllm_kit.check.export import check_export as fn
    setup = f"batch {batch} of {prompt_len}-token prompts, row b left-padded by 2*b tokens (seed {seed})"
    return fn(path, layerwise, rtol, atol, batch, prompt_len, decode_steps, seed, setup)
