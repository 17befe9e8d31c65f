"""Check an exported ONNX model against the PyTorch reference through ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trtllm_kit.errors import ToolkitError
from trtllm_kit.export.io_spec import model_outputs, past_name
from trtllm_kit.models.reference import reference_from_weights
from trtllm_kit.models.spec import ModelSpec
from trtllm_kit.models.weights import WeightSource

# Max |onnx - reference| / max |reference| over compared logits, by export dtype.
TOLERANCE = {"fp32": 1e-4, "fp16": 3e-2, "bf16": 1.5e-1}


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
                  seed: int = 0) -> dict:
    """Run prefill and ``decode_steps`` greedy steps in ONNX Runtime and in the fp32 reference.

    Both are fed the reference's greedy tokens, so the logits stay comparable at every step; the
    greedy tokens ONNX Runtime would pick are compared separately.

    Returns:
        ``{"max_abs_err", "max_rel_err", "greedy_match", "first_mismatch", "tolerance", "passed", ...}``.

    Raises:
        ToolkitError: when the error is above the dtype's tolerance.
    """
    import onnxruntime as ort

    ref = reference_from_weights(spec, weights, torch.float32)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - e.g. no bf16 kernels on the CPU
        return {"skipped": f"ONNX Runtime cannot run this model on the CPU: {str(e).splitlines()[0][:200]}"}
    np_dtype = {"fp32": np.float32, "fp16": np.float16, "bf16": np.float32}[dtype]
    out_names = [o.name for o in model_outputs(spec, last_only)]
    max_abs = max_ref = 0.0
    steps = matches = 0
    first_mismatch = None
    for bi, batch in enumerate(batches):
        ids, mask = left_padded_prompts(spec, batch, prompt_len, seed + bi)
        pos = positions_from_mask(mask)
        past_t = None
        feeds_past = {past_name(i, kv): np.zeros((batch, L.n_kv_heads, 0, L.head_dim), np_dtype)
                      for i, L in enumerate(spec.layers) for kv in ("key", "value")}
        for step in range(decode_steps + 1):
            with torch.no_grad():
                ref_logits, past_t = ref(ids, pos, mask, past_t, last_only=last_only)
            outs = dict(zip(out_names, sess.run(out_names, {"input_ids": ids.numpy(), "position_ids": pos.numpy(),
                                                            "attention_mask": mask.numpy(), **feeds_past})))
            got = torch.from_numpy(outs["logits"].astype(np.float32))
            want = ref_logits
            if not last_only and step == 0:  # compare only real (unpadded) prompt positions
                keep = mask.bool()
                got, want = got[keep], want[keep]
            max_abs = max(max_abs, (got - want).abs().max().item())
            max_ref = max(max_ref, want.abs().max().item())
            ref_next = ref_logits[:, -1].argmax(-1)
            ort_next = torch.from_numpy(outs["logits"][:, -1].astype(np.float32)).argmax(-1)
            same = (ref_next == ort_next)
            matches += int(same.sum())
            steps += batch
            if first_mismatch is None and not bool(same.all()):
                first_mismatch = {"batch": batch, "step": step}
            feeds_past = {name.replace("present.", "past_key_values."): outs[name] for name in out_names[1:]}
            ids = ref_next[:, None]
            mask = torch.cat((mask, torch.ones(batch, 1, dtype=torch.long)), dim=1)
            pos = pos[:, -1:] + 1
    rel = max_abs / max(max_ref, 1e-12)
    result = {"batches": list(batches), "prompt_len": prompt_len, "decode_steps": decode_steps,
              "left_padding": True, "max_abs_err": max_abs, "max_rel_err": rel,
              "greedy_match": f"{matches}/{steps}", "first_mismatch": first_mismatch,
              "tolerance": TOLERANCE[dtype], "passed": rel <= TOLERANCE[dtype]}
    if not result["passed"]:
        raise ToolkitError(f"exported model disagrees with the PyTorch reference: max rel error {rel:.3g} "
                           f"> {TOLERANCE[dtype]:g} ({dtype})", "this is a bug in the exporter; please report it")
    return result
