"""``check ENGINE_DIR``: TensorRT against ONNX Runtime on the export the engine was built from.

Portable engines run through Polygraphy's ``TrtRunner`` on the same arrays as ONNX Runtime (ints in the
engine's dtypes; portable-static engines too, their past exactly the cached tokens, their presents compared with
the last positions of ONNX Runtime's); static-cache engines (``inplace``, ``plugin``) through ``StaticCacheTrtRunner`` on the same
step written as their inputs. Each step runs on the optimization profile that serves it.
"""

from __future__ import annotations

from pathlib import Path

from trtllm_kit.check.compare import compare_step, tolerances
from trtllm_kit.check.feeds import (engine_feed, generation_steps, new_rows_feed, new_rows_only, prefill_step,
                                   static_cache_feed, values_as_rows, zero_padding)
from trtllm_kit.check.results import CheckResult, LayerwiseResult
from trtllm_kit.check.runners import onnxrt_runner
from trtllm_kit.check.tools import expose_cuda_runtime
from trtllm_kit.errors import ToolkitError
from trtllm_kit.export.io_spec import past_name


def check_engine(engine_dir: Path, layerwise: bool, rtol: float | None, atol: float | None, batch: int,
                 prompt_len: int, decode_steps: int, seed: int, setup: str) -> CheckResult | LayerwiseResult:
    """TensorRT on ``ENGINE_DIR/model.engine`` against ONNX Runtime on its export (see ``check_path``).

    Raises:
        ToolkitError: a bf16 engine (ONNX Runtime has no CPU kernels for it), an export that is gone or
            changed, a point beyond the engine's limits, a TensorRT-RTX engine, no TensorRT or no GPU, an
            engine built with ``--weights inputs`` (not fed here; ``--layerwise`` still runs).
    """
    from trtllm_kit.engine.limits import select_profile
    from trtllm_kit.engine.manifest import EngineManifest

    m = EngineManifest.load_engine_dir(engine_dir)
    if m.dtype == "bf16":
        raise ToolkitError("ONNX Runtime, the reference for engines, has no bf16 kernels on the CPU for this graph",
                           "check an engine built from an fp16 or fp32 export")
    export_dir = source_export(m)
    m.limits.check_point(batch, prompt_len, decode_steps)  # the last step feeds prompt + decode_steps tokens
    rtol, atol = tolerances("fp16", rtol, atol)
    require_full_tensorrt(m)
    if layerwise:
        from trtllm_kit.check.layerwise import layerwise_engine

        return layerwise_engine(engine_dir, prefill_step(m.spec, m.dtype, batch, prompt_len, seed), rtol, atol,
                                setup)
    if m.weight_inputs is not None:
        raise ToolkitError(f"{engine_dir} takes its weights as inputs (built with --weights inputs); check feeds "
                           "engines whose weights are inside the plan",
                           "build the same export with --weights engine to check it, or use --layerwise "
                           "(it builds its own engine from the export)")
    from polygraphy.backend.trt import TrtRunner  # imports tensorrt: only once it is known to be there
    from polygraphy.backend.trt import util as trt_util

    from trtllm_kit.check.runners import StaticCacheTrtRunner, engine_dtypes

    class ValuesAsRows(TrtRunner):  # a values-transposed engine's presents, compared as the export's rows
        def infer(self, *args, **kwargs):
            return values_as_rows(super().infer(*args, **kwargs))
    from trtllm_kit.engine.kv_layouts import get_layout
    from trtllm_kit.engine.loading import load_engine

    loaded = load_engine(engine_dir, m, logger=trt_util.get_trt_logger(), purpose="check")
    layout = get_layout(m.kv_layout.name)
    dtypes = engine_dtypes(loaded.engine)
    ort = onnxrt_runner(export_dir / "model.onnx")
    steps = generation_steps(ort, m.spec, m.dtype, batch, prompt_len, decode_steps, seed)
    result = CheckResult(f"tensorrt ({m.flavor} {m.trt_version}, {m.kv_layout.name} KV, {m.precision})",
                         f"onnxrt ({m.dtype}, CPU) on {export_dir}", [s.label for s in steps], setup, rtol, atol)
    if layout.static_cache:
        result.notes.append(f"static cache: presents compared over the positions written so far (past + new) of "
                            f"the {m.kv_layout.max_seq}-position caches, left-padded positions zeroed in both "
                            "(a fully padded row attends over the whole cache, which differs by layout)")
    elif layout.returns_new_rows:
        result.notes.append("portable-static: presents are the new positions only (ONNX Runtime's last ones); the "
                            "prefill's past is one masked position")
    profiles = m.profile_specs()
    for step in steps:
        if layout.static_cache:
            k = select_profile(profiles, batch, step.new_len, 0)
            runner = StaticCacheTrtRunner(loaded.flavor.trt, loaded.engine, k)
            feed, post = static_cache_feed(step, m.spec, m.kv_layout.max_seq, dtypes), zero_padding(step)
        else:
            feed, post = (new_rows_feed(step, dtypes, m.values_transposed), new_rows_only(step)) \
                if layout.returns_new_rows else (engine_feed(step, dtypes), None)
            k = select_profile(profiles, batch, step.new_len, feed[past_name(0, "key")].shape[2])  # the past as fed
            runner = (ValuesAsRows if m.values_transposed else TrtRunner)(loaded.engine, name="tensorrt",
                                                                           optimization_profile=k)
        result.add(compare_step(f"{step.label} (profile {k})", runner, feed, ort, step.feed, rtol, atol,
                                postprocess=post))
    return result


def source_export(m) -> Path:
    """The export an engine was built from, unchanged since.

    Raises:
        ToolkitError: it is gone or its ``model.onnx`` changed.
    """
    from trtllm_kit.utils.fs import sha256_file

    export_dir = Path(m.source.export_dir)
    onnx_path = export_dir / "model.onnx"
    if not onnx_path.is_file():
        raise ToolkitError(f"the export this engine was built from ({export_dir}) is gone; ONNX Runtime runs it as "
                           "the reference", "export the model again and rebuild the engine")
    if sha256_file(onnx_path) != m.source.onnx_sha256:
        raise ToolkitError(f"{onnx_path} changed since this engine was built from it", "rebuild the engine")
    return export_dir


def require_full_tensorrt(m) -> None:
    """Polygraphy's TensorRT backend imports ``tensorrt``: say so in one line for other engines or none."""
    if m.flavor == "tensorrt-rtx":
        raise ToolkitError("check drives full TensorRT engines through Polygraphy; this one is TensorRT-RTX",
                           f"check the export it was built from: trtllm-kit check {m.source.export_dir}")
    from trtllm_kit.engine.flavors import load_flavor

    load_flavor("tensorrt")
    expose_cuda_runtime()
