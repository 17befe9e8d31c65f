"""``trtllm-kit inspect``: an engine directory, readably."""

from __future__ import annotations

import json
from pathlib import Path

from trtllm_kit.engine.builder import read_engine_meta


def _shape(s) -> str:
    return "[" + ", ".join("?" if d == -1 else str(d) for d in s) + "]"


def describe_engine(engine_dir: str | Path, layers: bool = False, as_json: bool = False) -> str:
    m = read_engine_meta(engine_dir)
    if as_json:
        return json.dumps(m, indent=2)
    spec = m["spec"]
    gpu = m["gpu"] if isinstance(m["gpu"], str) else f"{m['gpu']['name']} (compute capability {m['gpu']['compute_capability']})"
    heads = sorted({layer["n_heads"] for layer in spec["layers"]})
    lines = [
        f"engine      {Path(engine_dir) / 'model.engine'} ({m['engine_bytes'] / 1e6:.1f} MB, built in {m['build_seconds']}s)",
        f"flavor      {m['flavor']} {m['trt_version']}",
        f"built for   {gpu}",
        f"precision   {m['precision']}",
        f"kv cache    {m['kv_mode']}: {m['kv_cache']['layout']}",
        f"model       {spec['name']}: {spec['num_layers']} blocks, {spec['param_count'] / 1e6:.1f}M params, "
        f"heads per block {heads[0]}..{heads[-1]}",
        f"source      {m['source_onnx']['path']} (sha256 {m['source_onnx']['sha256'][:12]})",
        f"limits      batch <= {m['limits']['max_batch']}, prompt <= {m['limits']['max_input']}, "
        f"prompt + output <= {m['limits']['max_seq']}",
        "profiles",
    ]
    for p in m["profiles"]:
        lines.append(f"  {p['index']} {p['name']:8} " + "  ".join(
            f"{axis}: {p['min'][axis]}/{p['opt'][axis]}/{p['max'][axis]}" for axis in p["min"]) + "  (min/opt/max)")
    lines.append(f"I/O ({m['io_source']})")
    for t in m["io"]:
        lines.append(f"  {t['mode']:6} {t['name']:28} {t['dtype']:6} {_shape(t['shape'])}")
    if layers:
        info = Path(engine_dir) / "layers.json"
        if info.is_file():
            data = json.loads(info.read_text())
            lines.append(f"layers ({len(data.get('Layers', []))})")
            for layer in data.get("Layers", []):
                lines.append(f"  {layer if isinstance(layer, str) else layer.get('Name', layer)}")
        else:
            lines.append("layers: not available (TensorRT reports per-layer information only when the engine is "
                         "loaded on a GPU at build time)")
    return "\n".join(lines)
