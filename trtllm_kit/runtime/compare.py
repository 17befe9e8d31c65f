"""Compare two runners through the one generation loop (Polygraphy's comparator idea).

The reference runs greedily and its choices are fed to the candidate too (teacher forcing), so both
see exactly the same inputs at every step and their logits stay comparable; the candidate's own
greedy choice is compared separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trtllm_kit.runtime.base import Runner


@dataclass
class Comparison:
    """Step-by-step agreement of a candidate with a reference.

    Attributes:
        max_abs_err: max |candidate - reference| over every compared logit (finite ones).
        max_ref: max |reference logit|, the scale ``max_rel_err`` is relative to.
        nonfinite: candidate logits that were NaN or infinite.
        matches, compared: next-token choices that agree, and how many were compared.
        first_mismatch: ``{"batch", "step"}`` of the first disagreement, or None.
    """

    max_abs_err: float = 0.0
    max_ref: float = 0.0
    nonfinite: int = 0
    matches: int = 0
    compared: int = 0
    first_mismatch: dict | None = None
    batches: list[int] = field(default_factory=list)

    @property
    def max_rel_err(self) -> float:
        return self.max_abs_err / max(self.max_ref, 1e-12)

    def passed(self, tolerance: float) -> bool:
        return self.nonfinite == 0 and self.max_rel_err <= tolerance


def compare_runners(reference: Runner, candidate: Runner, prompts: list[tuple[torch.Tensor, torch.Tensor]],
                    new_tokens: int) -> Comparison:
    """Feed both active runners the same prompts and the reference's greedy tokens; compare logits.

    Args:
        reference, candidate: activated runners.
        prompts: (input_ids, attention_mask) pairs, each (B, S), possibly left-padded.
        new_tokens: steps per prompt (prefill + new_tokens - 1 decode steps).

    Returns:
        The comparison over every prompt and step.
    """
    out = Comparison()
    for ids, mask in prompts:
        ref_logits: list[torch.Tensor] = []
        ref_tokens = reference.loop(ids.to(reference.device), mask.to(reference.device), new_tokens,
                                    on_logits=lambda t, lg: ref_logits.append(lg.float().cpu()))
        forced = ref_tokens.to(candidate.device)
        cand_logits: list[torch.Tensor] = []
        candidate.loop(ids.to(candidate.device), mask.to(candidate.device), new_tokens,
                       pick=lambda t, lg: forced[:, t], on_logits=lambda t, lg: cand_logits.append(lg.float().cpu()))
        out.batches.append(ids.shape[0])
        for step, (want, got) in enumerate(zip(ref_logits, cand_logits)):
            finite = torch.isfinite(got)
            out.nonfinite += int((~finite).sum())
            if finite.any():
                out.max_abs_err = max(out.max_abs_err, float((got - want)[finite].abs().max()))
            out.max_ref = max(out.max_ref, float(want.abs().max()))
            same = got.argmax(-1) == want.argmax(-1)
            out.matches += int(same.sum())
            out.compared += same.numel()
            if out.first_mismatch is None and not bool(same.all()):
                out.first_mismatch = {"batch": ids.shape[0], "step": step}
    return out
