"""One contract for every backend: same tokens, same timing structure."""

import pytest
import torch

from trtllm_kit.export import onnx_from_model
from trtllm_kit.models import load_model
from trtllm_kit.runtime.eager import HFEagerRunner, ReferenceEagerRunner, eager_runner
from trtllm_kit.runtime.ort import OrtRunner


@pytest.fixture(scope="module")
def fp32_export(tmp_path_factory):
    return onnx_from_model("tiny-llama", tmp_path_factory.mktemp("rt") / "fp32", dtype="fp32", progress=False).out_dir


def _prompt(batch=3, length=10, seed=0):
    ids = torch.randint(3, 320, (batch, length), generator=torch.Generator().manual_seed(seed))
    return ids, torch.ones_like(ids)


def test_backends_generate_the_same_tokens(fp32_export):
    spec, weights = load_model("tiny-llama")
    ids, mask = _prompt()
    tokens = {}
    for runner in (HFEagerRunner(spec, weights, "fp32"), ReferenceEagerRunner(spec, weights, "fp32"),
                   OrtRunner.from_export(fp32_export)):
        with runner:
            res = runner.generate(ids, mask, 12)
        assert res.tokens.shape == (3, 12)
        assert len(res.decode_s) == 11 and res.prefill_s > 0
        assert res.total_s == pytest.approx(res.prefill_s + sum(res.decode_s), rel=1e-6)
        tokens[type(runner).__name__] = res.tokens
    assert torch.equal(tokens["HFEagerRunner"], tokens["ReferenceEagerRunner"])
    assert torch.equal(tokens["HFEagerRunner"], tokens["OrtRunner"])


def test_toolkit_eager_is_transformers_generate():
    """For dense models the eager backend is transformers' own generate, forced to the full length."""
    from trtllm_kit.runtime.eager import hf_model_from_weights

    spec, weights = load_model("tiny-llama-depth")
    runner = eager_runner(spec, weights, "fp32")
    assert isinstance(runner, HFEagerRunner)
    ids, mask = _prompt(2, 6, seed=3)
    with runner:
        got = runner.generate(ids, mask, 20).tokens
    model = hf_model_from_weights(spec, weights, torch.float32, torch.device("cpu"))
    want = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=20, eos_token_id=None)
    assert torch.equal(got, want[:, 6:])
    # a token the model emits early, were it the end-of-sequence token, would not stop the toolkit's run
    model.generation_config.eos_token_id = int(got[0, 3])
    short = model.generate(input_ids=ids[:1], attention_mask=mask[:1], do_sample=False, max_new_tokens=20)
    assert short.shape[1] < 26
    runner.model = model
    runner.active = True
    assert runner.generate(ids, mask, 20).tokens.shape == (2, 20)


def test_width_pruned_eager_uses_the_reference():
    spec, weights = load_model("tiny-llama-width")
    assert isinstance(eager_runner(spec, weights), ReferenceEagerRunner)


def test_ort_keeps_left_padding_consistent(fp32_export):
    from trtllm_kit.export.validate import left_padded_prompts

    spec, weights = load_model("tiny-llama")
    ids, mask = left_padded_prompts(spec, 3, 9, seed=4)
    with OrtRunner.from_export(fp32_export) as ort_runner, ReferenceEagerRunner(spec, weights, "fp32") as ref:
        assert torch.equal(ort_runner.generate(ids, mask, 8).tokens, ref.generate(ids, mask, 8).tokens)
