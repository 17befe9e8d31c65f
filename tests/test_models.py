import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import TINY
from trtllm_kit.errors import ShapeError, ToolkitError
from trtllm_kit.models import load_model
from trtllm_kit.models.checkpoint import hf_config, save_checkpoint
from trtllm_kit.models.presets import PRESETS
from trtllm_kit.models.reference import reference_from_weights
from trtllm_kit.models.weights import SeededWeights

PAPER_PARAMS = {"llama-7b": 6.74e9, "llama-7b-depth-20": 5.52e9, "llama-7b-depth-27": 4.92e9,
                "llama-7b-depth-35": 4.51e9, "llama-7b-llmpruner": 4.9e9, "llama-7b-flap": 4.9e9,
                "vicuna-13b": 13.0e9, "vicuna-13b-depth-21": 10.5e9, "vicuna-13b-depth-29": 9.53e9,
                "vicuna-13b-depth-37": 8.26e9, "vicuna-13b-llmpruner": 9.2e9, "vicuna-13b-flap": 9.5e9}


@pytest.mark.parametrize("name", list(PAPER_PARAMS))
def test_presets_match_paper_parameter_counts(name):
    spec = PRESETS[name].spec()
    assert spec.param_count() == pytest.approx(PAPER_PARAMS[name], rel=0.01)


def test_width_presets_are_uneven_with_flap_biases():
    for name in ("llama-7b-flap", "vicuna-13b-flap", "tiny-llama-width"):
        spec = PRESETS[name].spec()
        assert len({layer.n_heads for layer in spec.layers}) > 2
        assert len({layer.mlp_dim for layer in spec.layers}) > 2
        assert all(layer.o_bias and layer.down_bias and not layer.qkv_bias for layer in spec.layers)
    pruner = PRESETS["llama-7b-llmpruner"].spec()
    assert [layer.n_heads for layer in pruner.layers] == [32] * 4 + [21] * 26 + [32] * 2


def test_seeded_weights_are_deterministic_and_depth_presets_share_blocks():
    dense = SeededWeights(PRESETS["tiny-llama"].spec())
    depth = SeededWeights(PRESETS["tiny-llama-depth"].spec())  # blocks 3 and 4 removed
    again = SeededWeights(PRESETS["tiny-llama"].spec())
    name = "model.layers.3.mlp.down_proj.weight"
    assert torch.equal(dense.get(name), again.get(name))
    assert torch.equal(depth.get("model.layers.3.mlp.down_proj.weight"), dense.get("model.layers.5.mlp.down_proj.weight"))
    assert not torch.equal(dense.get("model.layers.0.self_attn.q_proj.weight"), dense.get("model.layers.1.self_attn.q_proj.weight"))


def _hf_logits(spec, weights, ids, mask, dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = {k: v for k, v in hf_config(spec, "float32").items() if not k.startswith("trtllm_kit")}
    hf = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    hf.load_state_dict(weights.state_dict(), strict=True)
    with torch.no_grad():
        return hf(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-depth"])
def test_reference_matches_transformers_llama(name):
    spec, weights = load_model(name)
    ref = reference_from_weights(spec, weights)
    ids = torch.randint(0, spec.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    want = _hf_logits(spec, weights, ids, mask)
    with torch.no_grad():
        got, past = ref(ids[:, :8], pos[:, :8], mask[:, :8])  # prefill 8 tokens
        for t in range(8, 11):  # then decode one token at a time through the KV cache
            step, past = ref(ids[:, t:t + 1], pos[:, t:t + 1], mask[:, :t + 1], past)
            got = torch.cat((got, step), dim=1)
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], rtol=1e-4, atol=1e-4)


def test_width_pruned_reference_runs_each_block_at_its_own_shape():
    spec, weights = load_model("tiny-llama-width")
    ref = reference_from_weights(spec, weights)
    ids = torch.randint(0, spec.vocab_size, (2, 5))
    logits, past = ref(ids, torch.arange(5).expand(2, 5), torch.ones_like(ids))
    assert logits.shape == (2, 5, spec.vocab_size) and torch.isfinite(logits).all()
    assert [k.shape[1] for k, _ in past] == [layer.n_kv_heads for layer in spec.layers]


def test_hf_checkpoint_loads_with_shapes_from_tensors(hf_tiny_checkpoint):
    spec, weights = load_model(str(hf_tiny_checkpoint))
    assert spec.num_layers == 3 and spec.layers[0].n_heads == 4 and spec.layers[0].n_kv_heads == 2
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(hf_tiny_checkpoint).eval()
    ids = torch.randint(0, 300, (1, 7))
    with torch.no_grad():
        want = hf(input_ids=ids).logits
        got, _ = reference_from_weights(spec, weights)(ids, torch.arange(7)[None], torch.ones_like(ids))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def _broken_copy(src, dst, edit):
    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize("edit,needle", [
    (lambda t: t.__setitem__("model.layers.1.self_attn.q_proj.weight",
                             t["model.layers.1.self_attn.q_proj.weight"][:-3]), "layer 1: self_attn.q_proj.weight"),
    (lambda t: t.__setitem__("model.layers.2.self_attn.v_proj.weight",
                             t["model.layers.2.self_attn.v_proj.weight"][:16]), "layer 2: self_attn.k_proj.weight"),
    (lambda t: t.pop("model.layers.0.mlp.up_proj.weight"), "model.layers.0.mlp.up_proj.weight is missing"),
])
def test_inconsistent_checkpoints_are_rejected_naming_layer_and_tensor(hf_tiny_checkpoint, tmp_path, edit, needle):
    bad = _broken_copy(hf_tiny_checkpoint, tmp_path / "bad", edit)
    with pytest.raises(ShapeError, match=needle.replace(".", r"\.")):
        load_model(str(bad))


def test_non_llama_config_is_rejected(hf_tiny_checkpoint, tmp_path):
    bad = tmp_path / "gpt"
    shutil.copytree(hf_tiny_checkpoint, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ToolkitError, match="not a LLaMA-family model"):
        load_model(str(bad))


def test_bin_checkpoint_loads_with_weights_only(hf_tiny_checkpoint, tmp_path):
    path = tmp_path / "bin"
    path.mkdir()
    shutil.copy(hf_tiny_checkpoint / "config.json", path)
    torch.save(load_file(hf_tiny_checkpoint / "model.safetensors"), path / "pytorch_model.bin")
    spec, weights = load_model(str(path))
    spec2, weights2 = load_model(str(hf_tiny_checkpoint))
    assert spec.layers == spec2.layers
    name = "model.layers.2.mlp.down_proj.weight"
    assert torch.equal(weights.get(name), weights2.get(name))


def test_pickled_code_in_bin_is_refused(hf_tiny_checkpoint, tmp_path):
    path = tmp_path / "evil"
    path.mkdir()
    shutil.copy(hf_tiny_checkpoint / "config.json", path)
    torch.save({"x": torch.zeros(1), "f": print}, path / "pytorch_model.bin")  # a callable is not a tensor
    with pytest.raises(ToolkitError, match="weights_only"):
        load_model(str(path))


def test_depth_prune_round_trip_equals_depth_preset(tmp_path):
    from trtllm_kit.prune import depth_prune

    out = tmp_path / "pruned"
    depth_prune("tiny-llama", [3, 4], out, dtype="fp32")
    spec, weights = load_model(str(out))
    preset_spec, preset_weights = load_model("tiny-llama-depth")
    assert spec.layers == preset_spec.layers and spec.source_layers == (0, 1, 2, 5)
    for name, t in preset_weights.items():
        assert torch.equal(weights.get(name), t), name
    # also loads in transformers itself
    from transformers import LlamaForCausalLM

    assert LlamaForCausalLM.from_pretrained(out).config.num_hidden_layers == 4


def test_width_pruned_checkpoint_round_trip(tmp_path):
    spec, weights = load_model("tiny-llama-width")
    save_checkpoint(spec, weights, tmp_path / "w", dtype=torch.float32)
    spec2, weights2 = load_model(str(tmp_path / "w"))
    assert spec2.layers == spec.layers


@pytest.mark.parametrize("name", TINY)
def test_tiny_presets_check(name):
    spec = PRESETS[name].spec()
    assert spec.num_layers in (4, 6)
