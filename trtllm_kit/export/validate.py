"""Check an exported ONNX model through ONNX Runtime against a reference the toolkit did not write.

The reference is transformers' ``LlamaForCausalLM`` (with a checkpoint's own config.json) wherever
transformers can hold the model, and the toolkit's reference module only for width-pruned models,
which transformers cannot load. Both run through the one generation loop (``runtime.compare``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from trtllm_kit.errors import ToolkitError
from trtllm_kit.export.manifest import ValidationRecord
from trtllm_kit.models.spec import ModelSpec
from trtllm_kit.models.weights import WeightSource

# Max |onnx - reference| / max |reference| over compared logits, by export dtype.
TOLERANCE = {"fp32": 1e-4, "fp16": 3e-2, "bf16": 1.5e-1}
REFERENCE_NAMES = {"transformers.generate": "transformers LlamaForCausalLM",
                   "toolkit.reference": "the toolkit's reference module (width-pruned: transformers cannot load it)"}


def left_padded_prompts(spec: ModelSpec, batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompts, the i-th left-padded by 2*i tokens: (input_ids, attention_mask), both (B, length)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, spec.vocab_size, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    for b in range(batch):
        pad = min(2 * b, length - 1)
        mask[b, :pad] = 0
        ids[b, :pad] = 0
    return ids, mask


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding, as transformers' generate computes them."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def validate_onnx(onnx_path: Path, spec: ModelSpec, weights: WeightSource, dtype: str, last_only: bool,
                  batches: tuple[int, ...] = (1, 3), prompt_len: int = 9, decode_steps: int = 4,
                  seed: int = 0) -> ValidationRecord:
    """Prefill and ``decode_steps`` greedy steps in ONNX Runtime (CPU) against the fp32 reference.

    Returns:
        The comparison record (``passed`` True).

    Raises:
        ToolkitError: non-finite logits (fp16 overflow: the message says to export in bf16 or fp32), or
            an error above the dtype's tolerance.
    """
    from trtllm_kit.runtime.compare import compare_runners
    from trtllm_kit.runtime.eager import eager_runner
    from trtllm_kit.runtime.ort import OrtRunner

    prompts = [left_padded_prompts(spec, b, prompt_len, seed + k) for k, b in enumerate(batches)]
    with eager_runner(spec, weights, "fp32", "cpu") as ref, \
            OrtRunner(onnx_path, spec, dtype, last_only, "cpu") as cand:
        cmp = compare_runners(ref, cand, prompts, decode_steps + 1)
        impls = (REFERENCE_NAMES.get(ref.impl, ref.impl), cand.impl)
    record = ValidationRecord(
        reference=f"{impls[0]} (fp32)", candidate=impls[1], batches=list(batches), prompt_len=prompt_len,
        decode_steps=decode_steps, left_padding=True, max_abs_err=cmp.max_abs_err, max_rel_err=cmp.max_rel_err,
        nonfinite=cmp.nonfinite, greedy_match=f"{cmp.matches}/{cmp.compared}", first_mismatch=cmp.first_mismatch,
        tolerance=TOLERANCE[dtype], passed=cmp.passed(TOLERANCE[dtype]))
    if cmp.nonfinite:
        hint = ("fp16 overflowed: export with --dtype bf16 or --dtype fp32" if dtype == "fp16"
                else "the model's activations overflow; export with --dtype fp32")
        raise ToolkitError(f"the exported model gives {cmp.nonfinite} non-finite logits (NaN/inf) in validation", hint)
    if not record.passed:
        raise ToolkitError(f"exported model disagrees with {impls[0]}: max rel error {cmp.max_rel_err:.3g} "
                           f"> {TOLERANCE[dtype]:g} ({dtype})",
                           "the checkpoint may use a feature the exporter does not model; please report it")
    return record
