"""``trtllm-kit inspect``: an engine directory, readably."""

from __future__ import annotations

import json
from pathlib import Path

from trtllm_kit.engine.manifest import EngineManifest
from trtllm_kit.utils.units import size


def _shape(s) -> str:
    return "[" + ", ".join("?" if d == -1 else str(d) for d in s) + "]"


def describe_engine(engine_dir: str | Path, as_json: bool = False) -> str:
    """The engine's manifest as aligned text (or as its JSON).

    Raises:
        ToolkitError: ``engine_dir`` is not an engine directory of this format.
    """
    m = EngineManifest.load_engine_dir(engine_dir)
    if as_json:
        return json.dumps(m.model_dump(mode="json"), indent=2)
    spec, lim = m.spec, m.limits
    gpu = (f"{m.gpu.name} (compute capability {m.gpu.compute_capability})" if m.gpu else
           "no GPU (a TensorRT-RTX engine runs on compute capability 8.0/8.6/8.9/12.x)")
    heads = sorted({layer.n_heads for layer in spec.layers})
    kv = f"{m.kv_layout.name}: {m.kv_layout.description}"
    plugin = m.kv_layout.plugin
    if plugin:
        kv += f" (plugin library {plugin.file}, load it first)"
    lines = [
        f"engine      {Path(engine_dir) / 'model.engine'} ({m.engine_bytes / 1e6:.1f} MB, built in {m.build_seconds}s)",
        f"flavor      {m.flavor} {m.trt_version}",
        f"built for   {gpu}",
        f"precision   {m.precision}",
        f"kv cache    {kv}",
        f"model       {spec.name}: {spec.num_layers} blocks, {spec.param_count() / 1e6:.1f}M params, "
        f"heads per block {heads[0]}..{heads[-1]}",
        "gemm        " + (f"{plugin.gemm} plugin in {plugin.file} (cuBLASLt: needs {', '.join(plugin.links)})"
                             if plugin and plugin.gemm else "TensorRT's matrix multiply layers"),
        "norm        " + (f"{plugin.norm} plugin in {plugin.file}" if plugin and plugin.norm
                             else "the exported RMSNorm ops (TensorRT layers)"),
        "rope        " + (f"{plugin.rope} plugin in {plugin.file}" if plugin and plugin.rope
                             else "the exported rotary ops (TensorRT layers)"),
        f"source      {m.source.export_dir} (model.onnx sha256 {m.source.onnx_sha256[:12]})",
        f"limits      batch <= {lim.max_batch}, prompt <= {lim.max_input}, prompt + output <= {lim.max_seq}",
        "profiles",
    ]
    for p in m.profiles:
        lines.append(f"  {p.index} {p.name:8} " + "  ".join(
            f"{axis}: {p.min[axis]}/{p.opt[axis]}/{p.max[axis]}" for axis in p.min) + "  (min/opt/max)")
    w = m.weight_inputs
    if w:
        lines.append(f"weights     {len(w.tensors)} tensors as engine inputs in {w.file} ({size(w.bytes)}), "
                     "bound once per execution context (not listed below)")
    lines.append(f"I/O ({m.io_source})")
    for t in m.io:
        if w and t.name in w.tensors:
            continue
        lines.append(f"  {t.mode:6} {t.name:28} {t.dtype:6} {_shape(t.shape)}")
    if m.builder_settings:
        lines.append("builder     " + ", ".join(f"{k}={v}" for k, v in m.builder_settings.items()))
    if m.build_phases:
        lines.append("phases      " + ", ".join(f"{k} {v:.1f}s" for k, v in m.build_phases.items()))
    return "\n".join(lines)


def describe_layers(engine_dir: str | Path) -> str:
    """The engine's layers, through Polygraphy's engine inspection (``polygraphy inspect model --show layers``)
    where Polygraphy, the engine's TensorRT and a GPU are here; otherwise from ``layers.json`` (TensorRT's
    engine inspector, written at build time on a GPU), saying in one line why.

    Raises:
        ToolkitError: ``engine_dir`` is not an engine directory of this format, or Polygraphy cannot load
            an engine that this machine should be able to load (a wrong TensorRT version, an altered plugin).
    """
    m = EngineManifest.load_engine_dir(engine_dir)
    why = _polygraphy_unavailable(m)
    if why is None:
        return "layers (Polygraphy's engine inspection)\n" + _polygraphy_layers(Path(engine_dir), m)
    info = Path(engine_dir) / (m.layers_file or "layers.json")
    if not info.is_file():
        return (f"layers: not available (not through Polygraphy: {why}; and TensorRT reports per-layer information "
                "only when the engine is loaded on a GPU at build time)")
    data = json.loads(info.read_text(), strict=False)  # engines built before layer_info_json kept 8.6's raw text
    layers = data.get("Layers", [])
    lines = [f"layers ({len(layers)}, from {info.name}; not through Polygraphy: {why})"]
    for layer in layers:
        if isinstance(layer, str):
            lines.append(f"  {layer}")
        else:
            lines.append(f"  {layer.get('Name', '?')}  [{layer.get('LayerType', '?')}]  {layer.get('TacticName', '')}")
    return "\n".join(lines)


def _polygraphy_unavailable(m: EngineManifest) -> str | None:
    """Why Polygraphy cannot load this engine here (None: it can)."""
    from trtllm_kit.engine.flavors import detect_gpu, load_flavor
    from trtllm_kit.errors import MissingToolError

    if m.flavor == "tensorrt-rtx":
        return "it is a TensorRT-RTX engine and Polygraphy drives full TensorRT here"
    try:
        from trtllm_kit.check.tools import require_polygraphy

        require_polygraphy()
        load_flavor("tensorrt")
    except MissingToolError as e:
        return str(e)
    if detect_gpu() is None:
        return "no CUDA GPU to load the engine on"
    return None


def _polygraphy_layers(engine_dir: Path, m: EngineManifest) -> str:
    from polygraphy.backend.trt import util as trt_util

    from trtllm_kit.engine.loading import load_engine

    loaded = load_engine(engine_dir, m, logger=trt_util.get_trt_logger(), purpose="inspect")
    context = loaded.engine.create_execution_context()
    return trt_util.str_from_engine(loaded.engine, context, show_layers=True)
