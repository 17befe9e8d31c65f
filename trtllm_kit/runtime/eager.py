"""PyTorch eager runners: transformers' own ``generate`` (the paper's baseline) or the toolkit reference."""

from __future__ import annotations

import contextlib

import torch

from trtllm_kit.models.spec import ModelSpec
from trtllm_kit.models.weights import WeightSource
from trtllm_kit.runtime.base import Runner
from trtllm_kit.runtime.timing import StepTimer
from trtllm_kit.utils.dtypes import TORCH_DTYPES



def hf_compatible(spec: ModelSpec) -> bool:
    """Whether transformers' LlamaForCausalLM can hold this spec (uniform blocks, HF's bias flags)."""
    layer = spec.layers[0]
    return spec.is_uniform and layer.qkv_bias == layer.o_bias and layer.gate_up_bias == layer.down_bias


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def hf_model_from_weights(spec: ModelSpec, weights: WeightSource, dtype: torch.dtype, device: torch.device):
    """A transformers LlamaForCausalLM on ``device`` holding ``weights`` (streamed one tensor at a time).

    A checkpoint keeps its own ``config.json`` as transformers reads it, so every field the toolkit does
    not model shows up as a difference against the toolkit's backends; presets use the spec's config.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from trtllm_kit.models.checkpoint import hf_config
    from trtllm_kit.models.weights import CheckpointWeights

    if isinstance(weights, CheckpointWeights):
        config = LlamaConfig.from_pretrained(weights.path)
        config.tie_word_embeddings = spec.tie_word_embeddings  # a missing lm_head is tied (and said so)
    else:
        config = LlamaConfig(**{k: v for k, v in hf_config(spec, str(dtype).removeprefix("torch.")).items()
                                if not k.startswith("trtllm_kit")})
    with default_dtype(dtype), torch.device(device):
        model = LlamaForCausalLM(config)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, t in weights.items():
            params[name].copy_(t)
    model.eval()
    model.generation_config.pad_token_id = 0
    return model


def forced_length_kwargs(new_tokens: int) -> dict:
    """Greedy, exactly ``new_tokens``: no end-of-sequence token, so nothing stops early or is suppressed.

    The paper forces the length with min_length = max_length; that also masks the EOS logit, which the
    other backends would not do. Dropping EOS gives the same length and the same work, and plain greedy
    tokens on every backend.
    """
    return dict(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens, eos_token_id=None,
                use_cache=True)


class _StepMarker:
    """A logits processor that marks the end of each forward step, without synchronizing."""

    def __init__(self, timer: StepTimer):
        self.timer = timer

    def __call__(self, input_ids, scores):
        self.timer.step()
        return scores


class _EagerRunner(Runner):
    """What both eager runners share: a spec, its weights, a dtype, and a model while active."""

    name = "eager"
    impl = "eager"

    def __init__(self, spec: ModelSpec, weights: WeightSource, dtype: str = "fp16", device="cpu"):
        super().__init__(device)
        self.spec, self.weights, self.dtype = spec, weights, TORCH_DTYPES[dtype]

    def peak_memory_gb(self):
        """torch's peak allocated memory, as the paper reports it."""
        return torch.cuda.max_memory_allocated(self.device) / 1e9 if self.device.type == "cuda" else None

    def deactivate_impl(self):
        self.model = None


class HFEagerRunner(_EagerRunner):
    """transformers' ``generate`` on ``LlamaForCausalLM``: exactly the paper's measurement.

    ``generate`` runs transformers' own loop; the step methods (used when this runner is the reference
    of a comparison) call the model's forward with transformers' own KV cache.
    """

    impl = "transformers.generate"

    def activate_impl(self):
        import inspect

        self.model = hf_model_from_weights(self.spec, self.weights, self.dtype, self.device)
        # transformers >= 5.2x calls the KV cache argument `cache` (`past_key_values` before).
        self.cache_kw = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def reset(self, batch, max_len):
        self.cache = None

    @torch.inference_mode()
    def prefill_impl(self, input_ids, position_ids, attention_mask):
        return self.decode_impl(input_ids, position_ids, attention_mask, 0)

    @torch.inference_mode()
    def decode_impl(self, input_ids, position_ids, attention_mask, past_len):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=True, **{self.cache_kw: self.cache})
        self.cache = getattr(out, self.cache_kw)
        return out.logits[:, -1]

    def generate_impl(self, input_ids, attention_mask, new_tokens, timer):
        from transformers import LogitsProcessorList

        timer.start()
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                      logits_processor=LogitsProcessorList([_StepMarker(timer)]),
                                      **forced_length_kwargs(new_tokens))
        return out[:, input_ids.shape[1]:]


class ReferenceEagerRunner(_EagerRunner):
    """The toolkit's reference module (any per-layer shapes) through the shared loop."""

    impl = "toolkit.reference"

    def activate_impl(self):
        from trtllm_kit.models.reference import reference_from_weights

        self.model = reference_from_weights(self.spec, self.weights, self.dtype, self.device)

    def deactivate_impl(self):
        self.model, self.past = None, None

    def reset(self, batch, max_len):
        self.past = None

    @torch.inference_mode()
    def prefill_impl(self, input_ids, position_ids, attention_mask):
        logits, self.past = self.model(input_ids, position_ids, attention_mask, None, last_only=True)
        return logits[:, -1]

    @torch.inference_mode()
    def decode_impl(self, input_ids, position_ids, attention_mask, past_len):
        logits, self.past = self.model(input_ids, position_ids, attention_mask, self.past, last_only=True)
        return logits[:, -1]


def eager_runner(spec: ModelSpec, weights: WeightSource, dtype: str = "fp16", device="cpu",
                 impl: str = "auto") -> Runner:
    """transformers for what it can hold (dense, depth-pruned), the reference for width-pruned models."""
    if impl == "auto":
        impl = "hf" if hf_compatible(spec) else "reference"
    cls = HFEagerRunner if impl == "hf" else ReferenceEagerRunner
    return cls(spec, weights, dtype, device)
