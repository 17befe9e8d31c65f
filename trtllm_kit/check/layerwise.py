"""``check --layerwise``: the graph's anchor tensors marked as outputs, compared block by block on the prefill.

Compared per block ``i``, in graph order: ``layer{i}_input_norm`` (RMSNorm output), ``present.{i}.key`` and
``present.{i}.value`` (this step's keys after rotary, and values), ``layer{i}.attn`` (attention output per
head, before o_proj), ``layer{i}_attn_res`` (residual after attention), ``layer{i}_mlp_norm`` (RMSNorm) and
``layer{i}_mlp_res`` (residual after the MLP); then ``final_norm`` and ``logits``. Attention scores and
probabilities have no stable name in the graph (they are unnamed Where/Softmax outputs), so they are
not compared; a block whose keys and values match but whose ``attn`` does not is where to look.
"""

from __future__ import annotations

from pathlib import Path

from trtllm_kit.check.compare import compare_step
from trtllm_kit.check.results import LayerRow, LayerwiseResult
from trtllm_kit.export.io_spec import LOGITS, Anchors, present_name
from trtllm_kit.models.spec import ModelSpec


def anchor_rows(spec: ModelSpec) -> list[tuple[int | None, str]]:
    """(layer, tensor name) of every compared tensor, in graph order (layer None: after the last block)."""
    rows: list[tuple[int | None, str]] = []
    for i in range(spec.num_layers):
        rows += [(i, Anchors.input_norm(i)), (i, present_name(i, "key")), (i, present_name(i, "value")),
                 (i, Anchors.attn(i)), (i, Anchors.attn_res(i)), (i, Anchors.mlp_norm(i)), (i, Anchors.mlp_res(i))]
    return rows + [(None, Anchors.FINAL_NORM), (None, LOGITS)]


def marked_names(spec: ModelSpec) -> list[str]:
    """The anchors that are not graph outputs already: these are marked as extra outputs."""
    return [name for _, name in anchor_rows(spec) if name != LOGITS and not name.startswith("present.")]


def layerwise_rows(spec: ModelSpec, stats: dict) -> list[LayerRow]:
    return [LayerRow(layer, stats[name]) for layer, name in anchor_rows(spec) if name in stats]


def layerwise_export(export_dir: Path, step, reference_model, rtol: float, atol: float, setup: str) -> LayerwiseResult:
    """ONNX Runtime with the anchors marked (Polygraphy's ``ModifyOutputs``) against the PyTorch reference's
    matching tensors (forward hooks), on one prefill step.

    Args:
        export_dir: the export. step: the prefill (``feeds.prefill_step``). reference_model: the fp32
            reference module. rtol, atol: tolerances. setup: the inputs, in words.
    """
    from trtllm_kit.check.runners import ReferenceRunner, onnxrt_runner
    from trtllm_kit.export.manifest import ExportManifest

    m = ExportManifest.load(export_dir)
    names = marked_names(m.spec)
    ort = onnxrt_runner(Path(export_dir) / "model.onnx", marked=names)
    ref = ReferenceRunner(reference_model, m.spec, m.dtype, m.last_only_logits, marked=names)
    stats = compare_step("prefill, layerwise", ort, step.feed, ref, step.feed, rtol, atol)
    return LayerwiseResult(f"onnxrt ({m.dtype}, CPU)", "reference (PyTorch fp32)", setup, rtol, atol,
                           layerwise_rows(m.spec, stats))


def debug_engine(flavor, onnx_path: Path, names: list[str], feed: dict, options):
    """The export built by Polygraphy's loaders with ``names`` marked as outputs, as ``engine.builder`` would
    build it: the same flavour, FP16 flag where it has no strong typing, its tactic sources, optimization
    level and workspace; one profile of exactly ``feed``'s shapes; the portable KV layout."""
    import onnx
    from polygraphy.backend.trt import (CreateConfig, EngineFromNetwork, ModifyNetworkOutputs, NetworkFromOnnxPath,
                                        Profile)

    outputs = [o.name for o in onnx.load(str(onnx_path), load_external_data=False).graph.output] + names
    parse = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True) if flavor.strongly_typed else \
        NetworkFromOnnxPath(str(onnx_path))
    network = ModifyNetworkOutputs(parse, outputs=outputs)
    profile = Profile()
    for name, a in feed.items():
        profile.add(name, a.shape, a.shape, a.shape)
    trt = flavor.trt
    config = CreateConfig(
        fp16=not flavor.strongly_typed, tf32=not flavor.is_rtx, profiles=[profile],  # tf32: TensorRT's default
        tactic_sources=[] if not flavor.is_rtx and flavor.version_tuple < (10,) else None,
        builder_optimization_level=options.opt_level,
        memory_pool_limits=({trt.MemoryPoolType.WORKSPACE: int(options.workspace_gb * (1 << 30))}
                            if options.workspace_gb else None))
    return EngineFromNetwork(network, config=config)()


def layerwise_engine(engine_dir: Path, step, rtol: float, atol: float, setup: str) -> LayerwiseResult:
    """A debug engine (``debug_engine``) against ONNX Runtime on the engine's export, both with the anchors
    marked, on one prefill step.

    Marking a tensor as an output stops TensorRT fusing across it, so the debug engine shows where the
    graph's arithmetic loses precision under the engine's precision policy, not the exact kernels of
    ``model.engine``; and it has the portable KV layout (a plugin's attention kernel is not in it).
    """
    from polygraphy.backend.trt import TrtRunner

    from trtllm_kit.check.feeds import engine_feed
    from trtllm_kit.check.runners import engine_dtypes, onnxrt_runner
    from trtllm_kit.engine.flavors import detect_gpu, resolve_flavor
    from trtllm_kit.engine.manifest import EngineManifest
    from trtllm_kit.errors import ToolkitError

    m = EngineManifest.load(engine_dir)
    flavor = resolve_flavor(m.flavor, detect_gpu(), purpose="build a debug engine")
    if flavor.version != m.trt_version:
        raise ToolkitError(f"engine was built with {m.flavor} {m.trt_version} but {flavor.version} is installed",
                           "rebuild the engine with the installed version")
    onnx_path = Path(m.source.export_dir) / "model.onnx"
    names = marked_names(m.spec)
    engine = debug_engine(flavor, onnx_path, names, step.feed, m.build)
    trt_runner = TrtRunner(engine, name="tensorrt-debug")
    ort = onnxrt_runner(onnx_path, marked=names)
    stats = compare_step("prefill, layerwise", trt_runner, engine_feed(step, engine_dtypes(engine)), ort, step.feed,
                         rtol, atol)
    precision = "strongly typed" if flavor.strongly_typed else "FP16 builder flag"
    return LayerwiseResult(
        f"tensorrt-debug ({flavor.name} {flavor.version}, {precision})", f"onnxrt ({m.dtype}, CPU)", setup, rtol, atol,
        layerwise_rows(m.spec, stats),
        notes=["the debug engine is the export rebuilt with these tensors as outputs (portable KV layout): marking "
               "stops TensorRT fusing across them, so it shows where the graph loses precision under this "
               "precision policy, not model.engine's exact kernels"])
