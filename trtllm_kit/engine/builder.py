"""``engine_from_onnx``: an exported model to a TensorRT or TensorRT-RTX engine plus ``engine.json``."""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from trtllm_kit.engine.flavors import Flavor, GpuInfo, detect_gpu, resolve_flavor
from trtllm_kit.engine.profiles import ProfileSpec, SweepLimits, sweep_profiles
from trtllm_kit.errors import ToolkitError
from trtllm_kit.export import read_export
from trtllm_kit.export.io_spec import model_inputs, inplace_inputs
from trtllm_kit.models.spec import ModelSpec
from trtllm_kit.utils.fs import atomic_dir, sha256_file, write_json

KV_MODES = ("auto", "portable", "inplace")


@dataclass
class BuildOptions:
    """Everything that changes the engine; recorded in ``engine.json`` and used to decide reuse."""

    flavor: str = "auto"
    kv_mode: str = "auto"
    profiles: str = "split"
    max_batch: int = 384
    max_input: int = 128
    max_seq: int = 640
    opt_batch: int | None = None
    opt_input: int | None = None
    opt_level: int | None = None
    workspace_gb: float | None = None
    timing_cache: str | None = None


@dataclass
class EngineResult:
    out_dir: Path
    engine_path: Path
    metadata: dict


def _logger(trt):
    class CollectingLogger(trt.ILogger):
        """Keeps TensorRT's errors so a failed build can say what caused it."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(msg)
                print(f"[TensorRT] {msg}", file=sys.stderr)

    return CollectingLogger()


def _progress_monitor(trt, enabled: bool):
    if not enabled or not hasattr(trt, "IProgressMonitor"):
        return None
    from tqdm import tqdm

    class Monitor(trt.IProgressMonitor):
        """A progress bar per top-level build phase."""

        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, tqdm] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                self.bars[phase_name] = tqdm(total=num_steps, desc=f"build: {phase_name}", file=sys.stderr,
                                             leave=False)

        def step_complete(self, phase_name, step):
            if phase_name in self.bars:
                self.bars[phase_name].n = step + 1
                self.bars[phase_name].refresh()
            return True

        def phase_finish(self, phase_name):
            bar = self.bars.pop(phase_name, None)
            if bar:
                bar.close()

    return Monitor()


def _dtype_name(trt, dt) -> str:
    return str(dt).split(".")[-1].lower()


def io_from_network(trt, network) -> list[dict]:
    """I/O names, dtypes and shapes as the built network declares them (used when no GPU can load it)."""
    out = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        out.append({"name": t.name, "mode": "input", "dtype": _dtype_name(trt, t.dtype), "shape": list(t.shape)})
    for i in range(network.num_outputs):
        t = network.get_output(i)
        out.append({"name": t.name, "mode": "output", "dtype": _dtype_name(trt, t.dtype), "shape": list(t.shape)})
    return out


def io_from_engine(trt, engine) -> list[dict]:
    """I/O names, dtypes and shapes read from a deserialized engine (the authority at run time)."""
    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        out.append({"name": name, "mode": mode, "dtype": _dtype_name(trt, engine.get_tensor_dtype(name)),
                    "shape": list(engine.get_tensor_shape(name))})
    return out


def _create_network(flavor: Flavor, builder):
    trt = flavor.trt
    flags = 0
    if flavor.needs_explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if flavor.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flags)


def pin_fp32_islands(trt, network, config) -> int:
    """Without strong typing (TensorRT 8.6), keep the graph's float32 parts (RMSNorm statistics, softmax,
    rotary angles) in float32: the FP16 flag would otherwise let TensorRT run them in half precision,
    where the sum of squares of large activations overflows. Returns how many layers were pinned."""
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outs = [layer.get_output(k) for k in range(layer.num_outputs)]
        if outs and all(t.dtype == trt.DataType.FLOAT and not t.is_shape_tensor for t in outs):
            layer.precision = trt.DataType.FLOAT
            for k in range(layer.num_outputs):
                layer.set_output_type(k, trt.DataType.FLOAT)
            pinned += 1
    if pinned and hasattr(trt.BuilderFlag, "PREFER_PRECISION_CONSTRAINTS"):
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    return pinned


def resolve_kv_mode(requested: str, flavor: Flavor) -> str:
    if requested not in KV_MODES:
        raise ToolkitError(f"unknown --kv-mode {requested!r}", f"choose {', '.join(KV_MODES)}")
    if requested == "auto":
        return "inplace" if flavor.inplace_kv else "portable"
    if requested == "inplace" and not flavor.inplace_kv:
        raise ToolkitError(f"{flavor.name} {flavor.version} has no native KV-cache layers",
                           "in-place mode needs TensorRT >= 10.15 or TensorRT-RTX; use --kv-mode portable")
    return requested


def engine_from_onnx(onnx_dir: str | Path, out: str | Path, options: BuildOptions | None = None,
                     force: bool = False, progress: bool = True, gpu: GpuInfo | None | str = "detect") -> EngineResult:
    """Build ``OUT/model.engine`` and ``OUT/engine.json`` from an export directory.

    Args:
        onnx_dir: a directory written by ``trtllm-kit export``.
        out: the engine directory, written atomically (a failed build leaves nothing).
        options: flavour, KV mode, profiles and builder settings.
        force: replace an existing engine directory.
        progress: show build progress on stderr.
        gpu: the GPU to build for; detected by default.

    Raises:
        ToolkitError: bad options, a flavour that cannot run on this GPU, or a failed build (with the
            TensorRT errors that caused it).
    """
    opts = options or BuildOptions()
    onnx_dir = Path(onnx_dir)
    if not onnx_dir.exists():
        raise ToolkitError(f"ONNX directory {onnx_dir} does not exist", "create it with `trtllm-kit export`")
    export_meta = read_export(onnx_dir)
    spec = ModelSpec.from_dict(export_meta["spec"])
    if not export_meta.get("last_only_logits", True):
        print("note: this export returns logits for every position; prefill will write "
              "[batch, seq, vocab] logits (export with --logits last for generation)", file=sys.stderr)
    limits = SweepLimits(opts.max_batch, opts.max_input, opts.max_seq, opts.opt_batch, opts.opt_input).checked()
    gpu = detect_gpu() if gpu == "detect" else gpu
    flavor = resolve_flavor(opts.flavor, gpu)
    kv_mode = resolve_kv_mode(opts.kv_mode, flavor)
    profiles = sweep_profiles(limits, opts.profiles, inplace=kv_mode == "inplace")
    trt = flavor.trt
    onnx_path = onnx_dir / "model.onnx"
    onnx_hash = sha256_file(onnx_path)
    t0 = time.perf_counter()
    with atomic_dir(out, force=force) as tmp:
        logger = _logger(trt)
        builder = trt.Builder(logger)
        network = _create_network(flavor, builder)
        parser = trt.OnnxParser(network, logger)
        if kv_mode == "inplace":
            from trtllm_kit.engine.inplace import inplace_onnx, rewire_kv_cache

            ok = parser.parse(inplace_onnx(onnx_path, limits.max_seq), str(onnx_path))
        else:
            ok = parser.parse_from_file(str(onnx_path))
        if not ok:
            errs = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
            raise ToolkitError(f"TensorRT could not parse {onnx_path}: {errs}")
        if kv_mode == "inplace":
            rewire_kv_cache(trt, network, spec.num_layers)
        config = builder.create_builder_config()
        if not flavor.strongly_typed:
            config.set_flag(trt.BuilderFlag.FP16)  # TensorRT 8.6: precision from the flag, not from types
            pin_fp32_islands(trt, network, config)
        if opts.opt_level is not None:
            config.builder_optimization_level = opts.opt_level
        if opts.workspace_gb is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gb * (1 << 30)))
        if hasattr(trt, "ProfilingVerbosity"):
            config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        monitor = _progress_monitor(trt, progress)
        if monitor is not None:
            config.progress_monitor = monitor
        cache = None
        timing_cache_note = None
        if opts.timing_cache and flavor.is_rtx:
            timing_cache_note = "ignored: TensorRT-RTX has no timing cache (it tunes at run time)"
            print(f"note: --timing-cache {timing_cache_note}", file=sys.stderr)
        elif opts.timing_cache:
            tc_path = Path(opts.timing_cache)
            cache = config.create_timing_cache(tc_path.read_bytes() if tc_path.is_file() else b"")
            config.set_timing_cache(cache, ignore_mismatch=True)
        ios = inplace_inputs(spec, limits.max_seq) if kv_mode == "inplace" else model_inputs(spec)
        for prof in profiles:
            p = builder.create_optimization_profile()
            for io in ios:
                p.set_shape(io.name, *prof.shapes(io))
            config.add_optimization_profile(p)
        if progress and monitor is None:
            print(f"building {flavor.name} {flavor.version} engine for {spec.name} ...", file=sys.stderr)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            detail = "; ".join(logger.errors[-5:]) or "no error message from TensorRT"
            raise ToolkitError(f"TensorRT build failed: {detail}")
        engine_path = tmp / "model.engine"
        with open(engine_path, "wb") as f:
            f.write(plan)
        build_s = time.perf_counter() - t0
        io, io_source = io_from_network(trt, network), "network definition (no GPU to deserialize on)"
        engine_info = None
        if gpu is not None:
            runtime = trt.Runtime(logger)
            if hasattr(runtime, "engine_host_code_allowed"):
                runtime.engine_host_code_allowed = False
            engine = runtime.deserialize_cuda_engine(plan)
            if engine is None:
                raise ToolkitError("the engine was built but TensorRT cannot load it on this GPU: "
                                   + "; ".join(logger.errors[-3:]))
            io, io_source = io_from_engine(trt, engine), "deserialized engine"
            inspector = engine.create_engine_inspector()
            engine_info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        if cache is not None:
            Path(opts.timing_cache).write_bytes(memoryview(config.get_timing_cache().serialize()))
        meta = {
            "format": "trtllm-kit-engine/1",
            "flavor": flavor.name, "trt_version": flavor.version,
            "gpu": ({"name": gpu.name, "compute_capability": gpu.cc} if gpu else
                    "portable, built without GPU" if flavor.is_rtx else None),
            "precision": export_meta["dtype"] + (" (strongly typed)" if flavor.strongly_typed else " (FP16 flag)"),
            "dtype": export_meta["dtype"],
            "kv_mode": kv_mode,
            "kv_cache": ({"layout": "static [batch, kv_heads_i, max_seq, head_dim_i] per layer, updated in place "
                                    "at write_indices; present.* alias past_key_values.*", "max_seq": limits.max_seq}
                         if kv_mode == "inplace" else
                         {"layout": "past_key_values.* in [batch, kv_heads_i, past, head_dim_i], present.* out with "
                                    "past+new; ping-pong two buffers"}),
            "last_only_logits": export_meta.get("last_only_logits", True),
            "limits": asdict(limits),
            "profiles": [{"index": k, **p.to_dict(), "tensors": {io_.name: dict(zip(("min", "opt", "max"), p.shapes(io_)))
                                                                for io_ in ios}} for k, p in enumerate(profiles)],
            "io": io, "io_source": io_source,
            "source_onnx": {"path": str(onnx_path.absolute()), "sha256": onnx_hash,
                            "weights_sha256": export_meta["weights"]["sha256"], "model": export_meta["model"]},
            "spec": export_meta["spec"],
            "build_options": asdict(opts),
            "timing_cache": timing_cache_note or opts.timing_cache,
            "build_seconds": round(build_s, 2),
            "engine_bytes": engine_path.stat().st_size,
            "engine_sha256": hashlib.sha256(plan).hexdigest(),
            "host_code_embedded": False,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(tmp / "engine.json", meta)
        if engine_info:
            (tmp / "layers.json").write_text(engine_info)
    out = Path(out).absolute()
    return EngineResult(out, out / "model.engine", meta)


def profile_for(meta: dict, batch: int, seq: int, past: int) -> int:
    """Index of the engine profile that serves a step, or a ProfileError naming the flag to raise."""
    from trtllm_kit.errors import ProfileError

    lim = meta["limits"]
    for flag, name, value, limit in (("--max-batch", "batch", batch, lim["max_batch"]),
                                     ("--max-input", "prompt length", seq if past == 0 else 1, lim["max_input"]),
                                     ("--max-seq", "prompt + output length", past + seq, lim["max_seq"])):
        if value > limit:
            raise ProfileError(f"{name} {value} exceeds the engine's limit {limit}", f"rebuild with {flag} {value}")
    inplace = meta["kv_mode"] == "inplace"
    for k, p in enumerate(meta["profiles"]):
        spec = ProfileSpec(p["name"], p["min"], p["opt"], p["max"])
        if spec.covers(batch, seq, 0 if inplace else past):
            return k
    raise ProfileError(f"no engine profile covers batch {batch}, {seq} new tokens after {past}",
                       "rebuild with larger --max-batch/--max-input/--max-seq")


def default_engine_dir(onnx_dir: str | Path, opts: BuildOptions) -> Path:
    """``engines/<export dir name>`` under the current directory."""
    return Path("engines") / Path(onnx_dir).absolute().name


def read_engine_meta(engine_dir: str | Path) -> dict:
    import json

    engine_dir = Path(engine_dir)
    if not (engine_dir / "engine.json").is_file() or not (engine_dir / "model.engine").is_file():
        raise ToolkitError(f"{engine_dir} is not an engine directory (model.engine and engine.json expected)",
                           "build one with `trtllm-kit build ONNX_DIR`")
    return json.loads((engine_dir / "engine.json").read_text())
