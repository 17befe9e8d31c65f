"""The portable-static KV layout on the CPU: its graph (``new_rows_onnx``) driven by its own runtime side (the
layout's feeds, ``NewRowsCache``) in ONNX Runtime against the export with a growing cache; its engine built by
TensorRT-RTX where installed. The TensorRT runner drives the same objects on a GPU (``tests/test_gpu.py``)."""

import numpy as np
import pytest
import torch

from conftest import TINY

GQA = "transformers-gqa"  # a transformers LlamaForCausalLM (4 heads, 2 KV heads) saved by save_pretrained


@pytest.fixture(scope="module")
def exports(tiny_exports, hf_tiny_checkpoint, tmp_path_factory):
    """The tiny presets' exports and, under ``GQA``, the grouped-query transformers checkpoint's (fp16)."""
    from trtllm_kit.export import onnx_from_model

    gqa = onnx_from_model(str(hf_tiny_checkpoint), tmp_path_factory.mktemp("gqa") / "export", progress=False)
    return {**tiny_exports, GQA: gqa.out_dir}


def _drive(sess, layout, cache, feeds_args, new_len, dtypes):
    """One step of the rewritten graph as ``TrtRunner._run`` binds it: the layout's feeds, the cache's views (the
    past as bound, the present rows written into the view the engine would write), then the cache's advance."""
    feeds = layout.feeds(cache, *feeds_args, dtypes)
    inputs = {name: t.numpy() for name, t in feeds.items()}
    views = list(cache.views(new_len))
    inputs.update({v.past_name: v.past.numpy() for v in views})
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(names, inputs)))
    for v in views:
        assert out[v.present_name].shape == tuple(v.present.shape), v.present_name
        v.present.copy_(torch.from_numpy(out[v.present_name]))
    cache.advance(new_len)
    return out["logits"][:, -1], feeds, views


@pytest.mark.parametrize("past_form", ["matmul", "reduce", "reduce-vt", "split-vt"])
@pytest.mark.parametrize("name", [*TINY, GQA])
def test_a_fixed_capacity_cache_gives_the_growing_cache_logits(exports, tmp_path, name, past_form):
    """Prefill (a left-padded row) then decode steps: the portable-static graph, fed a past of one capacity every
    decode step with the positions not yet written masked out (a prefill: one masked position), and its new rows
    copied into that cache by ``NewRowsCache``, gives the logits of the exported graph fed its growing cache (both
    ONNX Runtime, fp16); every decode step binds the same shapes at the same addresses (what lets TensorRT plan once
    and replay a CUDA graph). A wrong row position, mask column or stale cache shows as a logits difference from the
    second step on. Every form of the past's attention (MatMuls; broadcast products summed, ``reduce``, with the
    values transposed, ``reduce-vt``; and ``split-vt``, its softmax over past and new apart), for the tiny presets
    (dense, depth-pruned, width-pruned with other heads in every block) and a grouped-query transformers checkpoint
    (2 KV heads for 4 query heads)."""
    import onnx
    import onnxruntime as ort

    from trtllm_kit.engine.kv_layouts import get_layout, new_rows_onnx
    from trtllm_kit.engine.limits import EngineLimits
    from trtllm_kit.export.io_spec import ATTENTION_MASK, INPUT_IDS, POSITION_IDS, past_name, present_name
    from trtllm_kit.export.manifest import ExportManifest

    d = exports[name]
    spec = ExportManifest.load(d).spec
    cpu = ["CPUExecutionProvider"]
    ref = ort.InferenceSession(str(d / "model.onnx"), providers=cpu)
    rewritten = new_rows_onnx(d / "model.onnx", past_form)
    nodes = onnx.load_from_string(rewritten).graph.node
    copies = [n.name for n in nodes if n.op_type == "Concat" and any(t.startswith("past_key_values.") for t in n.input)]
    assert copies == [], f"the cache is still copied by {copies}"
    past_products = [n for n in nodes if n.op_type == "MatMul" and n.name.endswith(".past/node")]
    assert len(past_products) == (2 * spec.num_layers if past_form == "matmul" else 0)
    sums = [n for n in nodes if n.op_type == "ReduceSum" and n.name.endswith(".past.sum/node")]
    assert len(sums) == (0 if past_form == "matmul" else 2 * spec.num_layers)
    new = ort.InferenceSession(rewritten, providers=cpu)
    assert [o.name for o in new.get_outputs()] == [o.name for o in ref.get_outputs()]
    layout = get_layout("portable-static")
    dtypes = {INPUT_IDS: torch.int64, POSITION_IDS: torch.int64, ATTENTION_MASK: torch.int64,
              past_name(0, "key"): torch.float16}
    B, S, N = 3, 7, 6
    ids = torch.randint(3, spec.vocab_size, (B, S), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, :3] = 0
    vt = past_form in ("reduce-vt", "split-vt")
    cache = layout.new_cache(spec, B, S + N, EngineLimits(4, 16, 32).checked(), dtypes, torch.device("cpu"),
                             values_transposed=vt)
    cache.restart()
    assert cache.capacity == 16  # S + N - 1 = 12 positions rounded up to a multiple of 8 (at most max_seq - 1 = 31)
    # the reference: the exported graph with its growing cache, as ONNX Runtime runs it
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    past = {past_name(i, kv): np.zeros((B, L.n_kv_heads, 0, L.head_dim), np.float16)
            for i, L in enumerate(spec.layers) for kv in ("key", "value")}
    names = [o.name for o in ref.get_outputs()]
    want = dict(zip(names, ref.run(names, {INPUT_IDS: ids.numpy(), POSITION_IDS: pos.numpy(),
                                           ATTENTION_MASK: mask.numpy(), **past})))
    got, _, views = _drive(new, layout, cache, (ids, pos, mask, 0), S, dtypes)
    np.testing.assert_allclose(got.astype(np.float32), want["logits"][:, -1].astype(np.float32), atol=2e-3)
    assert all(v.past.shape[3 if vt and v.past_name.endswith(".value") else 2] == 1 for v in views)  # one position
    assert layout.bound_past(cache, 0) == 1 and layout.bound_past(cache, S) == cache.capacity
    full = torch.cat((mask, torch.ones(B, N, dtype=torch.long)), dim=1)
    bound = None
    for t in range(1, N):
        tok = torch.from_numpy(want["logits"][:, -1].argmax(-1)).view(B, 1)
        p = pos[:, -1:] + t
        past = {past_name(i, kv): want[present_name(i, kv)] for i in range(spec.num_layers) for kv in ("key", "value")}
        want = dict(zip(names, ref.run(names, {INPUT_IDS: tok.numpy(), POSITION_IDS: p.numpy(),
                                               ATTENTION_MASK: full[:, :S + t].numpy(), **past})))
        got, feeds, views = _drive(new, layout, cache, (tok, p, full[:, :S + t], S + t - 1), 1, dtypes)
        np.testing.assert_allclose(got.astype(np.float32), want["logits"][:, -1].astype(np.float32), atol=2e-3,
                                   err_msg=f"decode step {t}")
        now = [(n, tuple(x.shape), x.data_ptr()) for n, x in feeds.items()]
        now += [(v.past_name, tuple(v.past.shape), v.past.data_ptr()) for v in views]
        now += [(v.present_name, tuple(v.present.shape), v.present.data_ptr()) for v in views]
        assert bound is None or now == bound, "a decode step bound other shapes or addresses"
        bound = now
    # what the cache holds is the growing cache's content, at every real token's position (a padded query attends
    # uniformly over whatever its row holds, the whole capacity here, so its keys and values differ by layout)
    real = full[:, None, :S + N - 1, None].numpy().astype(np.float32)
    for i in range(spec.num_layers):
        for kv in ("key", "value"):
            buf = cache.buffers[i, kv].transpose(2, 3) if vt and kv == "value" else cache.buffers[i, kv]
            held = buf[:, :, :S + N - 1].numpy().astype(np.float32)
            np.testing.assert_allclose(held * real, want[present_name(i, kv)].astype(np.float32) * real, atol=2e-3)


def test_an_export_without_the_anchors_is_refused(tmp_path, tiny_exports):
    """A graph whose present.* outputs do not come from this exporter's anchors: one clear error naming the fix."""
    import onnx

    from trtllm_kit.engine.kv_layouts import new_rows_onnx
    from trtllm_kit.errors import ToolkitError

    model = onnx.load(str(tiny_exports["tiny-llama"] / "model.onnx"))
    for node in model.graph.node:
        node.output[:] = ["renamed_" + o if o == "layer0.k_new" else o for o in node.output]
        node.input[:] = ["renamed_" + o if o == "layer0.k_new" else o for o in node.input]
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ToolkitError, match="not written by this toolkit's exporter.*layer0.k_new"):
        new_rows_onnx(path)


def test_the_cache_capacity_is_rounded_to_eight_positions_within_the_profile():
    """A decode step's past is the generation's length - 1 rounded up to a multiple of 8 (aligned rows of scores), and
    left as it is where the rounding would pass the decode profile's largest past (``max_seq`` - 1)."""
    from trtllm_kit.engine.kv_layouts import get_layout
    from trtllm_kit.engine.limits import EngineLimits
    from trtllm_kit.export.io_spec import ATTENTION_MASK, INPUT_IDS, POSITION_IDS, past_name
    from trtllm_kit.models import load_model

    spec, _ = load_model("tiny-llama")
    dtypes = {INPUT_IDS: torch.int64, POSITION_IDS: torch.int64, ATTENTION_MASK: torch.int64,
              past_name(0, "key"): torch.float16}
    limits = EngineLimits(4, 16, 32).checked()
    for generation, past in ((2, 8), (9, 8), (10, 16), (25, 24), (31, 30), (32, 31)):
        cache = get_layout("portable-static").new_cache(spec, 2, generation, limits, dtypes, torch.device("cpu"))
        assert (cache.capacity, tuple(cache.mask.shape)) == (past, (2, past + 1)), generation
