import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import TINY
from trtllm_kit.errors import ToolkitError
from trtllm_kit.export import onnx_from_model
from trtllm_kit.export.validate import left_padded_prompts, positions_from_mask
from trtllm_kit.models import load_model


@pytest.mark.parametrize("name", TINY)
def test_export_validates_against_pytorch(tiny_exports, name):
    meta = json.loads((tiny_exports[name] / "export.json").read_text())
    v = meta["validation"]
    assert v["passed"] and v["left_padding"] and v["batches"] == [1, 3] and v["decode_steps"] == 4
    assert v["max_rel_err"] < 3e-2 and v["greedy_match"] == "20/20" and v["nonfinite"] == 0
    # validated against something the toolkit did not write, wherever transformers can hold the model
    assert v["reference"].startswith("transformers" if name != "tiny-llama-width" else "the toolkit's reference")
    assert meta["dtype"] == "fp16" and meta["opset"] >= 17 and len(meta["weights"]["sha256"]) == 64
    spec, _ = load_model(name)
    assert meta["spec"]["layers"] == [dict(vars(layer)) for layer in spec.layers]
    names = [i["name"] for i in meta["inputs"]]
    assert names[:3] == ["input_ids", "position_ids", "attention_mask"]
    assert names[3:5] == ["past_key_values.0.key", "past_key_values.0.value"]
    assert [o["name"] for o in meta["outputs"]][:3] == ["logits", "present.0.key", "present.0.value"]


@pytest.mark.parametrize("name", TINY)
def test_exported_graph_has_named_dynamic_axes_and_passes_checker(tiny_exports, name):
    path = tiny_exports[name] / "model.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert model.opset_import[0].version >= 17
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert dims["input_ids"] == ["batch_size", "sequence_length"]
    assert dims["attention_mask"] == ["batch_size", "total_sequence_length"]
    spec, _ = load_model(name)
    for i, layer in enumerate(spec.layers):
        assert dims[f"past_key_values.{i}.key"] == ["batch_size", layer.n_kv_heads, "past_sequence_length", layer.head_dim]


def _run(sess, spec, ids, mask, past=None):
    feeds = {"input_ids": ids.numpy(), "position_ids": positions_from_mask(mask)[:, -ids.shape[1]:].numpy(),
             "attention_mask": mask.numpy()}
    for i, layer in enumerate(spec.layers):
        for kv in ("key", "value"):
            feeds[f"past_key_values.{i}.{kv}"] = (past[f"present.{i}.{kv}"] if past else
                                                  np.zeros((ids.shape[0], layer.n_kv_heads, 0, layer.head_dim), np.float16))
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def test_left_padded_row_equals_its_unpadded_prompt(tiny_exports):
    """A left-padded batch must give each row the logits it gets alone, in prefill and decode."""
    spec, _ = load_model("tiny-llama-width")
    sess = ort.InferenceSession(str(tiny_exports["tiny-llama-width"] / "model.onnx"), providers=["CPUExecutionProvider"])
    ids, mask = left_padded_prompts(spec, 3, 10, seed=5)  # row 2 has 4 pad tokens
    batch = _run(sess, spec, ids, mask)
    alone = _run(sess, spec, ids[2:, 4:], mask[2:, 4:])
    np.testing.assert_allclose(batch["logits"][2], alone["logits"][0], atol=2e-2)
    nxt = torch.tensor([[7], [8], [9]])
    batch2 = _run(sess, spec, nxt, torch.cat((mask, torch.ones(3, 1, dtype=torch.long)), 1), batch)
    alone2 = _run(sess, spec, nxt[2:], torch.ones(1, 7, dtype=torch.long), alone)
    np.testing.assert_allclose(batch2["logits"][2], alone2["logits"][0], atol=2e-2)


def test_all_position_logits_and_fp32(tmp_path):
    res = onnx_from_model("tiny-llama-width", tmp_path / "all", dtype="fp32", last_only=False, progress=False)
    assert res.manifest.validation.max_rel_err < 1e-4
    assert res.manifest.outputs[0].dims == ["batch_size", "sequence_length", 320]


def test_hf_round_trip_matches_transformers(hf_tiny_checkpoint, tmp_path):
    """save_pretrained -> toolkit load -> export -> ONNX Runtime logits == transformers' own logits."""
    from transformers import LlamaForCausalLM

    res = onnx_from_model(str(hf_tiny_checkpoint), tmp_path / "hf", dtype="fp32", last_only=False, progress=False)
    hf = LlamaForCausalLM.from_pretrained(hf_tiny_checkpoint).eval()
    spec, _ = load_model(str(hf_tiny_checkpoint))
    ids, mask = left_padded_prompts(spec, 2, 8, seed=3)
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask).logits.numpy()
    sess = ort.InferenceSession(str(res.onnx_path), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids.numpy(), "position_ids": positions_from_mask(mask).numpy(), "attention_mask": mask.numpy()}
    for i, layer in enumerate(spec.layers):
        for kv in ("key", "value"):
            feeds[f"past_key_values.{i}.{kv}"] = np.zeros((2, layer.n_kv_heads, 0, layer.head_dim), np.float32)
    got = sess.run(["logits"], feeds)[0]
    real = mask.bool().numpy()
    np.testing.assert_allclose(got[real], want[real], rtol=1e-4, atol=1e-4)


def test_failed_export_leaves_no_directory(hf_tiny_checkpoint, tmp_path):
    import shutil

    bad = tmp_path / "truncated"
    shutil.copytree(hf_tiny_checkpoint, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])  # weights cut off mid-file
    out = tmp_path / "out"
    with pytest.raises(Exception):
        onnx_from_model(str(bad), out, progress=False)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_existing_output_needs_force(tiny_exports, tmp_path):
    """An export directory of the toolkit's own is replaced only with --force; one the user made is refused
    without suggesting --force (which would not replace it either)."""
    import shutil

    own = tmp_path / "own"
    shutil.copytree(tiny_exports["tiny-llama"], own)
    with pytest.raises(ToolkitError, match="already exists and is not empty") as e:
        onnx_from_model("tiny-llama", own, progress=False)
    assert e.value.hint == "pass --force to replace it"
    out = tmp_path / "x"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ToolkitError, match="was not created by trtllm-kit") as e:
        onnx_from_model("tiny-llama", out, progress=False)
    assert "--force" not in f"{e.value.message} {e.value.hint}"
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("name", TINY)
def test_exported_onnx_builds_with_tensorrt_rtx(tiny_exports, name):
    """The graph is TensorRT-compatible: the real TensorRT-RTX parser and builder accept it on the CPU."""
    trt = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX is part of the default install")
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    net = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(net, logger)
    assert parser.parse_from_file(str(tiny_exports[name] / "model.onnx")), [parser.get_error(i).desc()
                                                                            for i in range(parser.num_errors)]
    cfg = builder.create_builder_config()
    prof = builder.create_optimization_profile()
    for i in range(net.num_inputs):
        t = net.get_input(i)
        if t.name in ("input_ids", "position_ids"):
            prof.set_shape(t.name, (1, 1), (2, 8), (4, 16))
        elif t.name == "attention_mask":
            prof.set_shape(t.name, (1, 1), (2, 8), (4, 16))
        else:
            prof.set_shape(t.name, (1, t.shape[1], 0, t.shape[3]), (2, t.shape[1], 0, t.shape[3]),
                           (4, t.shape[1], 0, t.shape[3]))
    cfg.add_optimization_profile(prof)
    engine = builder.build_serialized_network(net, cfg)
    assert engine is not None and engine.nbytes > 0


def test_initializers_read_from_external_data_equal_the_inline_ones(tiny_exports, tmp_path):
    """What ``--weights inputs`` stores for a 7B export (whose weights are ONNX external data) is what the file
    holds: the same tiny export saved with external data reads back (memory-mapped) equal to its inline
    initializers, and a name it lacks is one clear error."""
    from trtllm_kit.engine.weights import onnx_initializers

    model = onnx.load(tiny_exports["tiny-llama-width"] / "model.onnx")
    inline = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    onnx.save_model(model, tmp_path / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    external = onnx.load(tmp_path / "model.onnx", load_external_data=False)
    assert all(i.data_location == onnx.TensorProto.EXTERNAL for i in external.graph.initializer
               if len(i.dims) >= 2)
    got = onnx_initializers(tmp_path / "model.onnx", list(inline))
    for name, want in inline.items():
        assert got[name].dtype == want.dtype and np.array_equal(np.asarray(got[name]), want), name
    with pytest.raises(ToolkitError, match="no initializer nope"):
        onnx_initializers(tmp_path / "model.onnx", ["nope"])
