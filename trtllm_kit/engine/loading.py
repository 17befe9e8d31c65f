"""Deserialize an engine directory's ``model.engine`` on this GPU, as the runtime does: the flavour and
version that built it, the KV layout's runtime (the plugin library) loaded first, host code refused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trtllm_kit.engine.flavors import Flavor
from trtllm_kit.engine.manifest import EngineManifest
from trtllm_kit.errors import ToolkitError
from trtllm_kit.export.io_spec import present_for


@dataclass
class LoadedEngine:
    """A deserialized engine with the flavour and runtime it lives in (keep the runtime alive with it)."""

    flavor: Flavor
    runtime: object
    engine: object


def load_engine(engine_dir: str | Path, manifest: EngineManifest | None = None, logger=None,
                purpose: str = "run") -> LoadedEngine:
    """Load ``ENGINE_DIR/model.engine`` for running or inspecting on this machine's GPU.

    Args:
        engine_dir: written by ``trtllm-kit build``.
        manifest: its ``engine.json`` (read when None).
        logger: a TensorRT logger (a WARNING-level one when None).
        purpose: what the engine is loaded for, in error messages.

    Raises:
        ToolkitError: no GPU, a flavour or version other than the one that built the engine, a missing or
            altered plugin library, or an engine this GPU cannot load.
    """
    from trtllm_kit.engine.flavors import detect_gpu, resolve_flavor
    from trtllm_kit.engine.kv_layouts import get_layout

    engine_dir = Path(engine_dir)
    m = manifest or EngineManifest.load_engine_dir(engine_dir)
    path = engine_dir / "model.engine"
    if not path.is_file():
        raise ToolkitError(f"{engine_dir} has no model.engine", EngineManifest.REDO)
    gpu = detect_gpu()
    if gpu is None:
        raise ToolkitError(f"TensorRT engines need a CUDA GPU to {purpose}, and none was found",
                           "use a GPU machine")
    flavor = resolve_flavor(m.flavor, gpu, purpose=purpose)
    if flavor.version != m.trt_version:
        raise ToolkitError(f"engine was built with {m.flavor} {m.trt_version} but {flavor.version} is installed",
                           "rebuild the engine with the installed version")
    trt = flavor.trt
    get_layout(m.kv_layout.name).load_runtime(trt, engine_dir, m.kv_layout)
    runtime = trt.Runtime(logger or trt.Logger(trt.Logger.WARNING))
    if hasattr(runtime, "engine_host_code_allowed"):
        runtime.engine_host_code_allowed = False  # engines built here never embed host code
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise ToolkitError(f"TensorRT could not load {path}",
                           "it may have been built for another GPU or TensorRT version; rebuild it")
    return LoadedEngine(flavor, runtime, engine)


def check_bindable(trt, engine, same_cache_dtype: bool) -> None:
    """Refuse, in one line, an engine the toolkit's runners would feed wrongly without an error from TensorRT.

    Both runners (``runtime.trt.TrtRunner`` and ``check``'s) bind device memory to every input and, for a
    static cache, each ``present.*`` to the buffer of its ``past_key_values.*``; for the portable-static layout
    the runner copies each ``present.*`` into that buffer.

    Raises:
        ToolkitError: an input TensorRT reads from host memory (a shape tensor), or, with ``same_cache_dtype``, a
            ``present.*`` whose dtype differs from its ``past_key_values.*`` (seen on TensorRT 8.6: fp32 written
            into fp16 caches).
    """
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    host = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
            and hasattr(engine, "is_shape_inference_io") and engine.is_shape_inference_io(n)]
    if host:
        raise ToolkitError(f"engine input(s) {', '.join(host)} are shape tensors, which TensorRT reads from host "
                           "memory; the toolkit feeds device memory", EngineManifest.REDO + " with this version")
    if not same_cache_dtype:
        return
    for past, present in ((n, present_for(n)) for n in names if present_for(n)):
        a, b = engine.get_tensor_dtype(present), engine.get_tensor_dtype(past)
        if a != b:
            raise ToolkitError(f"the engine's {present} is {a} but {past} is {b}: the cache needs one dtype",
                               EngineManifest.REDO + " with this version")
