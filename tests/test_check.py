"""`trtllm-kit check` on the CPU: exports through ONNX Runtime against the PyTorch reference, via Polygraphy."""

import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import TINY, assert_one_line_error, cli, emulate_kv_update
from trtllm_kit.check import check_path
from trtllm_kit.errors import MissingToolError

CORRUPT_LAYER = 2


@pytest.fixture(scope="module")
def corrupted(tiny_exports, tmp_path_factory):
    """A copy of the tiny-llama export with block 2's o_proj weight scaled x50 in model.onnx."""
    bad = tmp_path_factory.mktemp("corrupt") / "tiny-llama"
    shutil.copytree(tiny_exports["tiny-llama"], bad)
    model = onnx.load(str(bad / "model.onnx"))
    name = f"model.layers.{CORRUPT_LAYER}.self_attn.o_proj.weight"
    t = next(t for t in model.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 50, name))
    onnx.save(model, str(bad / "model.onnx"))
    return bad


@pytest.mark.parametrize("name", TINY)
def test_check_export_passes_for_tiny_exports(tiny_exports, name):
    res = check_path(tiny_exports[name])
    assert res.passed and res.steps == ["prefill", "decode 1", "decode 2", "decode 3"]
    layers = len(res.outputs) // 2
    assert list(res.outputs) == ["logits"] + [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    assert (res.rtol, res.atol) == (1e-2, 5e-2)  # fp16 defaults
    assert 0 < res.outputs["logits"].max_abs_err < res.atol


def test_check_command_prints_polygraphy_statistics(tiny_exports):
    out = cli("check", str(tiny_exports["tiny-llama"]), check=True).stdout
    assert "Accuracy Summary | onnxrt vs. reference | Passed: 1/1 iterations" in out  # Polygraphy's own log
    assert "Absolute Difference | Stats:" in out and "==== decode 3 ====" in out
    assert "check passed: 13 outputs within tolerance over 4 steps" in out
    assert any(line.startswith("logits ") and line.endswith("OK") for line in out.splitlines())


def test_corrupted_export_fails_and_names_logits(corrupted):
    proc = cli("check", str(corrupted))
    assert proc.returncode == 2
    assert_one_line_error(proc, "check failed: logits", f"present.{CORRUPT_LAYER + 1}.key")
    assert f"present.{CORRUPT_LAYER}.key" not in proc.stderr  # its keys come before the corrupted o_proj
    assert any(line.startswith("logits ") and line.endswith("FAIL") for line in proc.stdout.splitlines())


def test_layerwise_names_the_first_bad_layer(corrupted):
    proc = cli("check", str(corrupted), "--layerwise")
    assert_one_line_error(proc, f"check failed: layer {CORRUPT_LAYER} is the first to diverge",
                          f"layer{CORRUPT_LAYER}_attn_res")
    rows = {line.split()[1]: line.split()[-1] for line in proc.stdout.splitlines()
            if line[:1].isdigit() or line.startswith("- ")}
    assert rows[f"layer{CORRUPT_LAYER}.attn"] == "OK"  # attention output is computed before o_proj
    assert rows[f"layer{CORRUPT_LAYER}_attn_res"] == "FAIL" and rows["logits"] == "FAIL"
    assert all(rows[f"layer{i}_{t}"] == "OK" for i in range(CORRUPT_LAYER)
               for t in ("input_norm", "attn_res", "mlp_res"))
    assert f"first divergence: layer {CORRUPT_LAYER} (layer{CORRUPT_LAYER}_attn_res)" in proc.stdout


def test_layerwise_passes_on_uneven_width_pruned_blocks(tiny_exports):
    res = check_path(tiny_exports["tiny-llama-width"], layerwise=True)
    assert res.passed, "\n".join(res.lines())
    names = [r.stat.name for r in res.rows]
    assert names[:7] == ["layer0_input_norm", "present.0.key", "present.0.value", "layer0.attn", "layer0_attn_res",
                         "layer0_mlp_norm", "layer0_mlp_res"]
    assert names[-2:] == ["final_norm", "logits"] and len(names) == 7 * 6 + 2


def test_tolerance_flags_override_the_defaults(tiny_exports):
    proc = cli("check", str(tiny_exports["tiny-llama-depth"]), "--rtol", "0", "--atol", "1e-6", "--steps", "0")
    assert_one_line_error(proc, "check failed: logits", "rtol 0, atol 1e-06")


def test_static_cache_feed_is_the_same_step(tiny_exports):
    """A step written as a static-cache engine's inputs (caches padded to max_seq, padded mask, write_indices)
    computes the same outputs as the portable step: checked through the in-place graph in ONNX Runtime."""
    import onnxruntime as ort

    from trtllm_kit.check.feeds import generation_steps, static_cache_feed, zero_padding
    from trtllm_kit.check.runners import ReferenceRunner, onnxrt_runner
    from trtllm_kit.check.tools import require_polygraphy
    from trtllm_kit.engine.kv_layouts import static_cache_onnx
    from trtllm_kit.export.manifest import ExportManifest

    require_polygraphy()
    from trtllm_kit.check.export import reference_model

    d, max_seq = tiny_exports["tiny-llama-width"], 32
    m = ExportManifest.load(d)
    steps = generation_steps(ReferenceRunner(reference_model(m), m.spec, m.dtype, True), m.spec, m.dtype, 3, 9, 2, 0)
    static = ort.InferenceSession(emulate_kv_update(static_cache_onnx(d / "model.onnx", max_seq)).SerializeToString(),
                                  providers=["CPUExecutionProvider"])
    dtypes = {i.name: np.int32 if i.name == "write_indices" else (np.float16 if "past" in i.name else np.int64)
              for i in static.get_inputs()}
    names = [o.name for o in static.get_outputs()]
    with onnxrt_runner(d / "model.onnx") as portable:
        for step in steps:
            zero = zero_padding(step)
            want = zero(dict(portable.infer(step.feed)))
            got = dict(zip(names, static.run(names, static_cache_feed(step, m.spec, max_seq, dtypes))))
            got = {n: a[:, :, :step.past_len + step.new_len] if n.startswith("present.") else a for n, a in got.items()}
            got = zero(got)
            np.testing.assert_allclose(got["logits"].astype(np.float32), want["logits"].astype(np.float32), atol=2e-3)
            for name in names[1:]:
                np.testing.assert_allclose(got[name].astype(np.float32), want[name].astype(np.float32), atol=2e-3)


def test_not_an_artifact_is_one_line_error(tmp_path):
    assert_one_line_error(cli("check", str(tmp_path)), "neither an export directory", "trtllm-kit export")


def test_missing_polygraphy_is_one_line_naming_the_extra():
    from trtllm_kit.check.tools import require_polygraphy

    with pytest.raises(MissingToolError) as e:
        require_polygraphy("polygraphy_not_installed_here")
    assert str(e.value) == "Polygraphy is not installed (install it with: pip install 'trtllm-kit[check]')"


@pytest.mark.parametrize("past_form", ["reduce", "matmul", "reduce-vt", "split-vt"])
def test_new_rows_feed_is_the_same_step(tiny_exports, past_form):
    """A step written as a portable-static engine's inputs (a prefill's past one masked position) computes the
    outputs of the portable step, as ``check`` compares them (``new_rows_only``: the presents' new positions, the
    left-padded ones zeroed): checked through the portable-static graph in ONNX Runtime. Without the zeroing the
    padded positions differ from the second block on (a fully padded query row attends over one more position),
    which is what ``check`` on the H200 reported for the width preset before it."""
    import onnxruntime as ort

    from trtllm_kit.check.feeds import generation_steps, new_rows_feed, new_rows_only, values_as_rows
    from trtllm_kit.check.runners import ReferenceRunner, onnxrt_runner
    from trtllm_kit.check.tools import require_polygraphy
    from trtllm_kit.engine.kv_layouts import new_rows_onnx
    from trtllm_kit.export.manifest import ExportManifest

    require_polygraphy()
    from trtllm_kit.check.export import reference_model

    d = tiny_exports["tiny-llama-width"]
    m = ExportManifest.load(d)
    steps = generation_steps(ReferenceRunner(reference_model(m), m.spec, m.dtype, True), m.spec, m.dtype, 3, 9, 2, 0)
    assert steps[0].feed["attention_mask"].min() == 0, "check's prompts are meant to have a left-padded row"
    new = ort.InferenceSession(new_rows_onnx(d / "model.onnx", past_form), providers=["CPUExecutionProvider"])
    vt = past_form in ("reduce-vt", "split-vt")
    dtypes = {i.name: np.float16 if "past" in i.name else np.int64 for i in new.get_inputs()}
    names = [o.name for o in new.get_outputs()]
    padded_differ = False
    with onnxrt_runner(d / "model.onnx") as portable:
        for step in steps:
            keep = new_rows_only(step)
            raw_want = dict(portable.infer(step.feed))
            raw_got = dict(zip(names, new.run(names, new_rows_feed(step, dtypes, values_transposed=vt))))
            if vt:
                raw_got = values_as_rows(raw_got)
            last = {n: a[:, :, -step.new_len:] if n.startswith("present.") else a for n, a in raw_want.items()}
            padded_differ |= any(not np.allclose(raw_got[n].astype(np.float32), last[n].astype(np.float32), atol=2e-3)
                                 for n in names[1:])
            want, got = keep(dict(raw_want)), keep(dict(raw_got))
            for name in names:
                np.testing.assert_allclose(got[name].astype(np.float32), want[name].astype(np.float32), atol=2e-3,
                                           err_msg=f"{step.label} {name}")
    assert padded_differ, "the padded positions were expected to differ without the zeroing"
