"""One step through Polygraphy's comparator: each runner on its own feed of that step, then one comparison.

Runners get their own feed dicts because a static-cache engine's inputs are the same step written
differently (caches padded to max_seq, ``write_indices``); for the others the feeds are the same arrays,
in the dtypes each runner declares. Polygraphy prints its per-output statistics as ``polygraphy run`` does.
"""

from __future__ import annotations

from trtllm_kit.check.results import OutputStat
from trtllm_kit.check.tools import output_results, simple_compare_func

# (rtol, atol) by the precision the candidate computes in. TensorRT engines count as fp16: TensorRT 8.6
# builds with the FP16 flag whatever the export's dtype, and later versions run fp32 graphs' matmuls in
# TF32, whose 10-bit mantissa is fp16's.
TOLERANCES = {"fp32": (1e-4, 1e-4), "fp16": (1e-2, 5e-2)}


def tolerances(precision: str, rtol: float | None, atol: float | None) -> tuple[float, float]:
    """The default (rtol, atol) of ``precision``, overridden by whichever of ``rtol``/``atol`` is given."""
    r, a = TOLERANCES[precision]
    return (r if rtol is None else rtol), (a if atol is None else atol)


def compare_step(label: str, candidate, candidate_feed, reference, reference_feed, rtol: float, atol: float,
                 postprocess=None) -> dict[str, OutputStat]:
    """Run ``candidate`` and ``reference`` (Polygraphy runners) on one step each and compare their outputs.

    Args:
        postprocess: a function applied to both runners' outputs first (``Comparator.postprocess``).

    Returns:
        Per output present in both, its statistics (relative errors relative to the reference).
    """
    from polygraphy.comparator import Comparator, RunResults
    from polygraphy.logger import G_LOGGER

    G_LOGGER.info(f"==== {label} ====")
    results = RunResults()
    results.extend(Comparator.run([candidate], data_loader=[candidate_feed]))
    results.extend(Comparator.run([reference], data_loader=[reference_feed]))
    if postprocess is not None:
        results = Comparator.postprocess(results, postprocess)
    accuracy = Comparator.compare_accuracy(results, compare_func=simple_compare_func(rtol, atol))
    return {name: OutputStat.of(name, r) for name, r in output_results(accuracy).items()}
