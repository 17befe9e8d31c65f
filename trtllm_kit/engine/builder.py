"""``engine_from_onnx``: an exported model to a TensorRT or TensorRT-RTX engine plus ``engine.json``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from trtllm_kit.engine.build_log import (Heartbeat, build_progress, collecting_logger, profile_phases,
                                         timing_cache_outcome)
from trtllm_kit.engine.flavors import Flavor, GpuInfo, detect_gpu, resolve_flavor
from trtllm_kit.engine.gemm import CONFLICT_HINTS, plugin_option_conflicts, resolve_gemm
from trtllm_kit.engine.kv_layouts import (NetworkContext, plugin_library_unavailable, resolve_kv_layout, resolve_norm,
                                          resolve_rope)
from trtllm_kit.engine.manifest import BuildOptions, EngineIO, EngineManifest, GpuRecord, ProfileRecord, SourceRecord
from trtllm_kit.engine.folds import scale_choice
from trtllm_kit.engine.weight_file import writing_weights
from trtllm_kit.engine.weights import FUSED_SEP, check_knobs, weight_input_choices, weights_to_inputs
from trtllm_kit.errors import ToolkitError
from trtllm_kit.export.manifest import ExportManifest
from trtllm_kit.utils.units import size

log = logging.getLogger(__name__)


@dataclass
class EngineResult:
    """What ``engine_from_onnx`` wrote: the directory, the plan and its manifest."""

    out_dir: Path
    engine_path: Path
    manifest: EngineManifest


def _dtype_name(dt) -> str:
    return str(dt).split(".")[-1].lower()


def io_from_network(network) -> list[EngineIO]:
    """I/O names, dtypes and shapes as the built network declares them (used when no GPU can load it)."""
    ios = [(network.get_input(i), "input") for i in range(network.num_inputs)]
    ios += [(network.get_output(i), "output") for i in range(network.num_outputs)]
    return [EngineIO(name=t.name, mode=mode, dtype=_dtype_name(t.dtype), shape=list(t.shape)) for t, mode in ios]


def io_from_engine(trt, engine) -> list[EngineIO]:
    """I/O names, dtypes and shapes read from a deserialized engine (the authority at run time)."""
    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        out.append(EngineIO(name=name, mode=mode, dtype=_dtype_name(engine.get_tensor_dtype(name)),
                            shape=list(engine.get_tensor_shape(name))))
    return out


def _create_network(flavor: Flavor, builder):
    trt = flavor.trt
    flags = 0
    if flavor.needs_explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if flavor.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flags)


def _configure(flavor: Flavor, builder, opts: BuildOptions, layout_name: str, precision_constraints: bool = False,
               gemm: str = "trt"):
    """Builder config: precision (and the layout's precision constraints), optimization level, workspace,
    tactic sources, refit.

    Returns:
        (config, settings): the config and the settings it was given, as recorded in engine.json.
    """
    trt = flavor.trt
    config = builder.create_builder_config()
    settings: dict = {}
    opt_level = opts.opt_level
    if not flavor.strongly_typed:
        # TensorRT 8.6: precision from the FP16 flag. The exported graph is fp16-safe by construction
        # (rotary from tables, max-scaled RMSNorm, finite mask value), so nothing is pinned to fp32.
        config.set_flag(trt.BuilderFlag.FP16)
        # REFIT keeps the weights opaque to Myelin, which otherwise spends minutes per GB of weights:
        # llama-7b cut to 2 blocks, decode profile, on an H200: 71 s with REFIT, not done in 330 s without
        # (scripts/probe_trt_build.py; docs/benchmarks/h200-trt86/README.md). With the weights as engine inputs
        # there is nothing left to hide or refit.
        settings["fp16_flag"] = True
        if opts.weights == "engine":
            config.set_flag(trt.BuilderFlag.REFIT)
            settings["refit"] = True
        if opt_level is None and layout_name == "portable-static" and gemm == "plugin":
            # TensorRT's attention beside the GEMM plugin: level 0 takes the first tactic that runs, float
            # multiplies among them (llama-7b cut to 2 blocks, batch 256, H200: 8.7 ms a step at level 0, 4.5 at
            # level 1, 4.8 at level 3; each level built it in ~30 s of TensorRT time, seven builds at once:
            # thirteenth session)
            opt_level = 1
        elif opt_level is None and (layout_name == "plugin" or gemm == "plugin"):
            # With attention or the multiplies in plugins, 8.6 leaves the rest to its classic path, which
            # JIT-compiles every fused pointwise op in every candidate format; level 0 takes prebuilt kernels
            # (tiny-llama, decode profile, H200: 59 s at level 0, not done in 330 s at the default level).
            opt_level = 0
    if not flavor.is_rtx and hasattr(config, "set_tactic_sources") and flavor.version_tuple < (10,):
        config.set_tactic_sources(0)  # TensorRT's own kernels only: cuBLAS/cuDNN tactics add minutes of timing
        settings["tactic_sources"] = "TensorRT kernels only (no cuBLAS/cuDNN)"
    if opt_level is not None:
        config.builder_optimization_level = opt_level
        settings["opt_level"] = opt_level
    if precision_constraints:  # a layout pinned layer precisions (the plugin layout on 8.6)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        settings["prefer_precision_constraints"] = True
    if opts.workspace_gb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gb * (1 << 30)))
    if hasattr(trt, "ProfilingVerbosity"):
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    return config, settings


def check_plugin_options(options: BuildOptions) -> None:
    """Refuse plugin options that these build options can never use, before any work: ``--gemm plugin`` without
    ``--weights inputs`` or with a ``--kv-mode`` other than plugin or portable-static, ``--norm plugin`` with inplace,
    ``--rope plugin`` with a ``--kv-mode`` other than plugin or portable-static. ``--kv-mode auto`` passes (it may
    choose the plugin layout: TensorRT 8.6 with nvcc); the builder checks again once the layout is chosen. Used by the
    builder, ``trtllm-kit bench`` (after its ``--kv-mode`` override) and ``scripts/bench_trt.py`` (for each layout).
    The fix offered is one that works with the TensorRT installed here (``_plugin_fix``: where the plugin library
    cannot be used at all, e.g. TensorRT-RTX, every plugin option at auto or trt).

    Raises:
        ToolkitError: the first conflict, naming the options and the fix.
    """
    conflicts = plugin_option_conflicts(options.gemm, options.norm, options.kv_mode, options.weights, rope=options.rope)
    if conflicts:
        option, why = next(iter(conflicts.items()))
        try:
            flavor = resolve_flavor(options.flavor, detect_gpu())
        except ToolkitError:  # no TensorRT that builds here: the static fix
            flavor = None
        raise ToolkitError(f"--{option} plugin: {why}", _plugin_fix(options, flavor, option, CONFLICT_HINTS[option]))


def _plugin_fix(options: BuildOptions, flavor: Flavor | None, option: str, hint: str, message: str = "") -> str:
    """``hint``, or, where this flavour cannot use the toolkit's plugin library at all, the fix that works here:
    every plugin option asked for at auto or trt (named together, so that one run fixes them all), with the reason
    unless ``message`` says it already."""
    reason = plugin_library_unavailable(flavor, options) if flavor is not None else None
    if reason is None:
        return hint
    asked = [o for o in ("gemm", "norm", "rope") if getattr(options, o) == "plugin"] or [option]
    flags = ", ".join(f"--{o}" for o in asked[:-1]) + (" and " if len(asked) > 1 else "") + f"--{asked[-1]}"
    if reason in message:
        return f"use {flags} auto or trt"
    return f"use {flags} auto or trt: the toolkit's plugin library cannot be used here ({reason})"


def resolve_choices(options: BuildOptions, flavor, notes: list[str] | None = None):
    """The KV layout and the GEMM / RMSNorm / rotary choices a build with these options makes with this flavour:
    (layout, gemm, norm, rope), each choice ``"plugin"`` or ``"trt"``; the reasons go to ``notes``.

    Raises:
        ToolkitError: a layout or plugin option the flavour cannot build here (naming what ``--kv-mode auto``
            chose when it was auto).
    """
    notes = [] if notes is None else notes
    layout = resolve_kv_layout(options.kv_mode, flavor, options, notes=notes)
    try:
        gemm = resolve_gemm(options, layout.name, notes=notes, flavor=flavor)
        norm = resolve_norm(options, layout.name, notes=notes, flavor=flavor)
        rope = resolve_rope(options, layout.name, notes=notes, flavor=flavor)
    except ToolkitError as e:
        hint = e.hint
        option = next((o for o in CONFLICT_HINTS if e.message.startswith(f"--{o} plugin:")), None)
        if option is not None:  # a static hint may name layouts this flavour cannot build with the plugin at all
            hint = _plugin_fix(options, flavor, option, hint, e.message)
        message = e.message
        if options.kv_mode == "auto":  # the user did not name the layout that refuses it
            message = f"{message} (--kv-mode auto chose the {layout.name} layout here)"
        raise ToolkitError(message, hint) from None
    from trtllm_kit.engine.weights import FUSE_ENV, LAYOUT_ENV, PAST_ENV

    if os.environ.get(PAST_ENV) and layout.name != "portable-static":
        notes.append(f"{PAST_ENV} is ignored: it chooses how a portable-static engine attends over its cache, and this "
                     f"build uses the {layout.name} layout")
    for env in (FUSE_ENV, LAYOUT_ENV):
        if os.environ.get(env) and options.weights != "inputs":
            notes.append(f"{env} is ignored: it shapes the weight inputs of a --weights inputs build, and this build "
                         "keeps the weights in the engine")
    return layout, gemm, norm, rope


def check_weights_dtype(options: BuildOptions, dtype: str) -> None:
    """``--weights inputs`` stores the weights through numpy, which has no bf16: refuse a bf16 export before parsing.

    Raises:
        ToolkitError: ``weights`` inputs with ``dtype`` bf16.
    """
    if options.weights == "inputs" and dtype == "bf16":
        raise ToolkitError("--weights inputs cannot store a bf16 export's weights (numpy, which writes "
                           "weights.safetensors, has no bf16)", "export with --dtype fp16 or fp32, or build with "
                           "--weights engine")


def check_buildable(options: BuildOptions, gpu: GpuInfo | None | str = "detect") -> None:
    """Everything about a build that can be checked before an export exists: the plugin options, the limits, and,
    where a TensorRT flavour can build for this GPU, the KV layout and plugin choices it would make. Used by
    ``trtllm-kit run``/``bench`` before they export anything. Where no flavour can build (no TensorRT installed,
    or none for this GPU) the choices are not checked: the build fails for that alone, which a benchmark notes on
    its trt points instead of refusing the run.

    Raises:
        ToolkitError: the first thing that would make the build fail, as the build itself words it.
    """
    check_plugin_options(options)
    check_knobs()
    options.limits.checked()
    try:
        flavor = resolve_flavor(options.flavor, detect_gpu() if gpu == "detect" else gpu)
    except ToolkitError:
        return
    resolve_choices(options, flavor)


def engine_from_onnx(onnx_dir: str | Path, out: str | Path, options: BuildOptions, force: bool = False,
                     progress: bool = True, gpu: GpuInfo | None | str = "detect") -> EngineResult:
    """Build ``OUT/model.engine`` and ``OUT/engine.json`` from an export directory.

    Args:
        onnx_dir: a directory written by ``trtllm-kit export``.
        out: the engine directory, written atomically (a failed or interrupted build leaves nothing).
        options: flavour, KV layout, profiles, limits and builder settings.
        force: replace an existing engine directory (only one the toolkit created).
        progress: show build progress on stderr.
        gpu: the GPU to build for; detected by default.

    Raises:
        ToolkitError: bad options, a flavour that cannot run on this GPU, a KV layout it cannot build, or
            a failed build (with the TensorRT errors that caused it).
    """
    from trtllm_kit import __version__
    from trtllm_kit.utils.fs import atomic_dir, atomic_write_bytes, check_output_dir, sha256_file
    from trtllm_kit.utils.interrupt import hard_interrupt
    from trtllm_kit.utils.manifest import utc_now

    check_plugin_options(options)  # before anything is looked at or made
    check_knobs()
    onnx_dir = Path(onnx_dir)
    if not onnx_dir.exists():
        raise ToolkitError(f"ONNX directory {onnx_dir} does not exist", "create it with `trtllm-kit export`")
    export = ExportManifest.load(onnx_dir)
    onnx_path = onnx_dir / "model.onnx"
    export.verify_onnx(onnx_dir)
    check_weights_dtype(options, export.dtype)
    spec = export.spec
    if not export.last_only_logits:
        log.warning("this export returns logits for every position; prefill will write [batch, seq, vocab] logits "
                    "(export with --logits last for generation)")
    limits = options.limits.checked()
    if limits.max_seq > spec.max_position_embeddings:
        raise ToolkitError(f"--max-seq {limits.max_seq} exceeds the model's max_position_embeddings "
                           f"{spec.max_position_embeddings}", f"use --max-seq {spec.max_position_embeddings} or less")
    check_output_dir(out, force, kind="engine")
    gpu = detect_gpu() if gpu == "detect" else gpu
    flavor = resolve_flavor(options.flavor, gpu)
    if flavor.max_onnx_opset and export.opset > flavor.max_onnx_opset:
        raise ToolkitError(f"{flavor.name} {flavor.version} reads ONNX opset <= {flavor.max_onnx_opset}, the export "
                           f"is opset {export.opset}", f"export again with --opset {flavor.max_onnx_opset}")
    if options.weights == "engine" and not flavor.is_rtx and flavor.version_tuple < (10,) and export.params > 1e9:
        # H200, TensorRT 8.6: no llama-7b build with the weights in the plan finished within 10 minutes; with
        # --weights inputs it built in 159 s (portable-static, seventeenth session; docs/benchmarks/h200-trt86/)
        log.warning("%s %s compiles the weights kept in the engine for minutes per GB (%.1fB parameters here: "
                    "likely over 10 minutes); --weights inputs builds a 7B model in about 3", flavor.name,
                    flavor.version, export.params / 1e9)
    notes: list[str] = []  # the choices and auto's reasons, logged once the plugin options fit the layout
    layout, gemm, norm, rope = resolve_choices(options, flavor, notes)
    for note in notes:
        log.info("%s", note)
    profiles = layout.profiles(limits, options.profiles)
    ios = layout.engine_inputs(spec, limits)
    trt = flavor.trt
    onnx_hash = sha256_file(onnx_path)
    what = f"build {spec.name} ({flavor.name} {flavor.version}, {layout.name} KV)"
    with atomic_dir(out, force=force, kind="engine") as tmp, hard_interrupt(tmp, what):
        logger = collecting_logger(trt)
        with Heartbeat(what, logger) as beat, build_progress(trt, progress) as monitor, ExitStack() as beside:
            beat.phase("parsing ONNX")
            builder = trt.Builder(logger)
            network = _create_network(flavor, builder)
            parser = trt.OnnxParser(network, logger)
            if not layout.parse(parser, onnx_path, limits, weight_inputs=options.weights == "inputs"):
                errs = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
                raise ToolkitError(f"TensorRT could not parse {onnx_path}: {errs}")
            beat.phase(f"preparing the network ({layout.name} KV cache)")
            ctx = NetworkContext(trt, network, spec, limits, options, tmp, strongly_typed=flavor.strongly_typed,
                                 gemm=gemm, norm=norm, rope=rope, onnx_path=onnx_path)
            plugin = layout.prepare_network(ctx)
            weights, fused = {}, 0
            if options.weights == "inputs":
                # one multiply per activation, the weights stored out x in: where the GEMM plugin multiplies
                fusion, weight_layout = weight_input_choices(ctx.gemm)
                fuse = {"on": True, "off": False, "qkv": "qkv"}[fusion]
                weights = weights_to_inputs(trt, network, onnx_path, fuse=fuse, out_x_in=weight_layout == "out_x_in")
                fused = sum(FUSED_SEP in k for k in weights)
                if fuse:
                    log.info("%s: %d groups of weight multiplies fused into one each (TRTLLM_KIT_FUSE=0: none)", what,
                             fused)
                log.info("%s: %d weight tensors (%s) become engine inputs", what, len(weights),
                         size(sum(a.nbytes for a in weights.values())))
            ctx.weight_arrays = weights
            plugin = layout.finish_network(ctx, set(weights), plugin)
            weight_record, weight_shapes, writer = None, {k: tuple(a.shape) for k, a in weights.items()}, None
            beside_s: dict[str, float] = {}
            if weights:  # made, written and hashed by a thread while TensorRT builds (weight_file; stopped on failure)
                _check_free_space(tmp, sum(a.nbytes for a in weights.values()), out)
                writer = beside.enter_context(writing_weights(weights, tmp))
                weights.clear()  # (ctx.weight_arrays: the same dict)
            config, settings = _configure(flavor, builder, options, layout.name, ctx.precision_constraints, ctx.gemm)
            settings["gemm"] = "TrtllmKitGemm plugin (cuBLASLt)" if ctx.gemm == "plugin" else "TensorRT layers"
            settings["norm"] = "TrtllmKitRMSNorm plugin" if ctx.norm == "plugin" else "exported ops"
            settings["rope"] = "TrtllmKitRotary plugin" if ctx.rope == "plugin" else "exported ops"
            settings.update(ctx.settings)
            if options.weights == "inputs":
                settings["weight_fusion"] = fusion
                settings["fused_weight_groups"] = fused
                settings["weight_layout"] = weight_layout
            if ctx.gemm == "plugin":  # (the GEMM plugin multiplies something: finish_network folded, or was told not to)
                settings["op_folding"] = "on" if ctx.folds else "off"
                if ctx.folds:  # whether the norms' scales were free to go into the weights (folds.scale_choice)
                    settings["norm_scale_in_weights"] = scale_choice()
                settings.update({f"folded_{k}": v for k, v in ctx.folds.items()})  # how many of each (folds.py)
            if settings:
                log.info("%s: builder settings %s", what, ", ".join(f"{k}={v}" for k, v in settings.items()))
            if monitor is not None:
                config.progress_monitor = monitor
            cache, cache_note = _timing_cache(flavor, config, options)
            for prof in profiles:
                p = builder.create_optimization_profile()
                for io in ios:
                    p.set_shape(io.name, *prof.shapes(io))
                for name, shape in weight_shapes.items():
                    p.set_shape(name, shape, shape, shape)
                config.add_optimization_profile(p)
            beat.phase("building the engine (TensorRT)")
            plan = builder.build_serialized_network(network, config)
            per_profile = profile_phases(logger.marks, time.perf_counter())
            if plan is None:
                detail = "; ".join(logger.errors[-5:]) or "no error message from TensorRT"
                raise ToolkitError(f"TensorRT build failed: {detail}",
                                  _build_failure_hint(detail, options, free_gpu_memory(), layout=layout.name, norm=norm,
                                                      flavor=flavor))
            if writer is not None:
                beat.phase("finishing the weight inputs' file")
                try:
                    weight_record = writer.result()
                except OSError as e:
                    raise ToolkitError(f"the weight inputs could not be written under {out}: {e.strerror or e}; "
                                       "nothing was written", _SPACE_HINT) from None
                beside_s = {"writing the weight inputs (beside TensorRT)": round(writer.seconds, 2)}
            beat.phase("writing and checking the engine")
            engine_path = tmp / "model.engine"
            try:
                with open(engine_path, "wb") as f:
                    f.write(plan)
            except OSError as e:
                raise ToolkitError(f"the engine could not be written under {out}: {e.strerror or e}; nothing was "
                                   "written", _SPACE_HINT) from None
            io, io_source, layers_file = io_from_network(network), "network definition (no GPU to deserialize on)", None
            if gpu is not None:
                io, layers_file = _check_engine(trt, logger, plan, tmp)
                io_source = "deserialized engine"
            if cache is not None:
                write, cache_note = timing_cache_outcome(cache_note, options.timing_cache, logger)
                if write:
                    atomic_write_bytes(options.timing_cache, memoryview(config.get_timing_cache().serialize()))
                else:
                    log.info("--timing-cache %s", cache_note)
        (tmp / "build.log").write_text("\n".join(logger.lines) + "\n")
        manifest = EngineManifest(
            toolkit_version=__version__, flavor=flavor.name, trt_version=flavor.version,
            gpu=GpuRecord(name=gpu.name, compute_capability=gpu.cc) if gpu else None, built_without_gpu=gpu is None,
            dtype=export.dtype,
            precision=export.dtype + (" (strongly typed)" if flavor.strongly_typed else " (FP16 builder flag)"),
            kv_layout=layout.record(limits, plugin), last_only_logits=export.last_only_logits,
            build=options.model_copy(update={"limits": limits}),
            profiles=[ProfileRecord.of(k, p, ios) for k, p in enumerate(profiles)], io=io, io_source=io_source,
            source=SourceRecord(export_dir=str(onnx_dir.absolute()), onnx_sha256=onnx_hash,
                                weights_sha256=export.weights.sha256, model=export.model),
            spec=spec, builder_settings=settings, timing_cache_note=cache_note,
            build_seconds=round(time.perf_counter() - beat.t0, 2),
            build_phases=beat.phases | per_profile | beside_s, engine_bytes=engine_path.stat().st_size,
            engine_sha256=hashlib.sha256(plan).hexdigest(), layers_file=layers_file, weight_inputs=weight_record,
            created=utc_now())
        manifest.save(tmp)
        del plan, network, builder, parser, ctx
    out = Path(out).absolute()
    return EngineResult(out, out / "model.engine", manifest)


_SPACE_HINT = "free space on that disk, or choose another --out"


def _check_free_space(directory: Path, need: int, out) -> None:
    """Refuse, before TensorRT builds, a build whose weight inputs (``need`` bytes) cannot fit on the disk of the
    engine directory (its temporary ``directory``): the file is written beside the build, and a full disk would
    only show once TensorRT had finished.

    Raises:
        ToolkitError: less free space than ``need`` plus 64 MB for the engine and its metadata.
    """
    import shutil

    free = shutil.disk_usage(directory).free
    if free < need + (64 << 20):
        raise ToolkitError(f"{out} is on a disk with {size(free)} free; the weight inputs alone need {size(need)}",
                           _SPACE_HINT)


def _build_failure_hint(detail: str, options: BuildOptions, gpu_memory: tuple[int, int] | None = None,
                        layout: str | None = None, norm: str | None = None, flavor=None) -> str | None:
    """What to change after a failed build, for the failures seen on real builds.

    Args:
        gpu_memory: (free, total) bytes of the build's GPU when it failed (``free_gpu_memory``), or None.
        layout, norm, flavor: the KV layout, the resolved ``--norm`` and the flavour of the build (the portable
            layout with the exported norms gets ``--norm plugin`` first where the flavour can load the plugin).
    """
    if "Could not find any implementation" in detail or "OutOfMemory" in detail:
        # llama-7b, one profile covering prefill and decode (256/128/640) on TensorRT 8.6 / H200, and llama-7b
        # cut to 8 blocks with a 4 GB workspace: no kernel of the fused graph fits the memory it may use.
        # H200, 2026-11-30: every portable llama-7b-family build failed so while benchmark runs held 70-110 GB of
        # the same GPU; the plugin builds beside them, which time smaller kernels, did not.
        steps = ["smaller --max-batch/--max-input/--max-seq"]
        if layout in ("portable", "portable-static") and norm == "trt" and flavor is not None \
                and plugin_library_unavailable(flavor, options) is None:
            # H200, TensorRT 8.6, 2026-11-30: portable llama-7b never built as one Myelin region over the whole
            # graph (also on an idle GPU); with the RMSNorm plugin cutting it at every norm it built in 457 s.
            steps.insert(0, "--norm plugin (the norm plugin cuts the whole-graph fused region into one per block)")
        if gpu_memory is not None and gpu_memory[0] < 0.5 * gpu_memory[1]:
            steps.insert(0, "an idle GPU (other processes held it)")
        if options.profiles == "single":
            steps.insert(0, "--profiles split (prefill and decode apart)")
        if options.workspace_gb is not None:
            steps.append(f"a larger --workspace than {options.workspace_gb:g} GB")
        mem = (f" ({gpu_memory[0] / 1e9:.0f} of {gpu_memory[1] / 1e9:.0f} GB of the GPU free when it failed)"
               if gpu_memory is not None else "")
        return (f"TensorRT found no kernel for the fused graph within the GPU memory it could get{mem}: try "
                + ", or ".join(steps))
    if "workspace" in detail.lower() and options.workspace_gb is not None:  # (TensorRT-RTX: "... workspace limit")
        return f"a larger --workspace than {options.workspace_gb:g} GB, or leave it unset"
    return None


def free_gpu_memory() -> tuple[int, int] | None:
    """(free, total) bytes of the current CUDA device, or None without one (or without torch's CUDA)."""
    try:
        import torch

        return torch.cuda.mem_get_info() if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a hint, never a second failure
        return None


def _timing_cache(flavor: Flavor, config, options: BuildOptions):
    """Attach the timing cache file (read if present); RTX has none (it tunes at run time)."""
    if not options.timing_cache:
        return None, None
    if flavor.is_rtx:
        note = "ignored: TensorRT-RTX has no timing cache (it tunes at run time)"
        log.warning("--timing-cache %s", note)
        return None, note
    path = Path(options.timing_cache)
    cache = config.create_timing_cache(path.read_bytes() if path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=True)
    return cache, f"{'reused and updated' if path.is_file() else 'created'}: {path}"


def _check_engine(trt, logger, plan, tmp: Path) -> tuple[list[EngineIO], str | None]:
    """Deserialize the plan on this GPU: its I/O (the authority) and its per-layer information."""
    runtime = trt.Runtime(logger)
    if hasattr(runtime, "engine_host_code_allowed"):
        runtime.engine_host_code_allowed = False
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise ToolkitError("the engine was built but TensorRT cannot load it on this GPU: " + "; ".join(logger.errors[-3:]))
    info = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    (tmp / "layers.json").write_text(layer_info_json(info))
    return io_from_engine(trt, engine), "layers.json"


def layer_info_json(info: str) -> str:
    """TensorRT's engine-inspector text as standard JSON. TensorRT 8.6 writes raw control characters (the 0x1e
    that separates ONNX layer names in ``Metadata``), which strict parsers (Python's ``json``, servers) refuse;
    they are escaped here. Text that is not JSON at all is kept whole under ``"raw"``."""
    try:
        return json.dumps(json.loads(info, strict=False), indent=1) + "\n"
    except ValueError:
        return json.dumps({"raw": info}) + "\n"


def default_engine_dir(onnx_dir: str | Path) -> Path:
    """``engines/<export dir name>`` under the current directory."""
    from trtllm_kit.utils.fs import safe_component

    return Path("engines") / safe_component(Path(onnx_dir).absolute().name)
