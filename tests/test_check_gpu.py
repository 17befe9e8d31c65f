"""`trtllm-kit check ENGINE_DIR` on a GPU with full TensorRT (the acceptance run: TensorRT 8.6 on an H200).

Run with `python -m pytest -m gpu tests/test_check_gpu.py -s` to see Polygraphy's statistics and the
layer-wise tables (what the FP16 flag does to each block) in the output.
"""

import pytest
import torch

from conftest import TINY, cli
from trtllm_kit.engine.limits import EngineLimits


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001 - not installed, or PyPI's stub without the real wheel
        return False
    return True


pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.skipif(not _has_tensorrt(), reason="needs full TensorRT (import tensorrt)")]
LIMITS = EngineLimits(max_batch=4, max_input=16, max_seq=64)


def _layouts(flavor, options) -> list[str]:
    """portable, plus plugin where this flavour can build it (it needs nvcc and the TensorRT headers)."""
    from trtllm_kit.engine.kv_layouts import KV_LAYOUTS

    try:
        reason = KV_LAYOUTS["plugin"].unavailable(flavor, options)
    except ImportError as e:  # the plugin's build support is not part of this checkout
        reason = str(e)
    print(f"\nplugin KV layout: {'built' if reason is None else 'skipped: ' + reason}")
    return ["portable"] + (["plugin"] if reason is None else [])


@pytest.fixture(scope="module")
def engines(tiny_exports, tmp_path_factory):
    from trtllm_kit.engine.builder import engine_from_onnx
    from trtllm_kit.engine.flavors import detect_gpu, resolve_flavor
    from trtllm_kit.engine.manifest import BuildOptions

    flavor = resolve_flavor("tensorrt", detect_gpu())
    root = tmp_path_factory.mktemp("check-engines")
    out = {}
    for layout in _layouts(flavor, BuildOptions(limits=LIMITS)):
        for name in TINY:
            opts = BuildOptions(flavor="tensorrt", kv_mode=layout, limits=LIMITS)
            out[(name, layout)] = engine_from_onnx(tiny_exports[name], root / f"{name}-{layout}", opts,
                                                   progress=False).out_dir
    return out


def test_check_engine_passes_for_tiny_engines(engines):
    for (name, layout), engine_dir in engines.items():
        proc = cli("check", str(engine_dir))
        print(proc.stdout[-3000:], proc.stderr)
        assert proc.returncode == 0, (name, layout, proc.stderr)
        assert "Accuracy Summary | tensorrt vs. onnxrt | Passed: 1/1 iterations" in proc.stdout
        assert "check passed: " in proc.stdout and "over 4 steps" in proc.stdout


def test_check_engine_layerwise_runs_and_prints_the_table(engines):
    for (name, layout), engine_dir in engines.items():
        if layout != "portable":
            continue
        proc = cli("check", str(engine_dir), "--layerwise")
        print(f"\n==== {name}: check --layerwise ====")
        print("\n".join(ln for ln in proc.stdout.splitlines() if not ln.startswith(("[", " "))), proc.stderr)
        assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr, proc.stderr
        assert "layer  tensor" in proc.stdout and "layer0_input_norm" in proc.stdout and "final_norm" in proc.stdout
        assert ("layerwise passed" in proc.stdout) == (proc.returncode == 0)


def test_inspect_layers_goes_through_polygraphy(engines):
    engine_dir = engines[("tiny-llama", "portable")]
    out = cli("inspect", str(engine_dir), "--layers", check=True).stdout
    assert "layers (Polygraphy's engine inspection)" in out and "Layer(s)" in out


def test_check_passes_for_a_portable_static_engine(tiny_exports, tmp_path):
    """A portable-static engine (the width-pruned preset: other heads and MLP width in every block, grouped-query
    attention) checked against ONNX Runtime: its presents are the new rows, compared with ONNX Runtime's last ones."""
    from trtllm_kit.engine.builder import engine_from_onnx
    from trtllm_kit.engine.manifest import BuildOptions

    opts = BuildOptions(flavor="tensorrt", kv_mode="portable-static", limits=LIMITS)
    eng = engine_from_onnx(tiny_exports["tiny-llama-width"], tmp_path / "eng", opts, progress=False).out_dir
    proc = cli("check", str(eng))
    print(proc.stdout[-3000:], proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert "presents are the new positions only" in proc.stdout and "check passed: " in proc.stdout
