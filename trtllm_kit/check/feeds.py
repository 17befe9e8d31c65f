"""The steps a check feeds: the project's generation inputs, not random data.

A left-padded batch of prompts (``export.validate.left_padded_prompts``), positions from the mask, then
greedy decode steps. Each decode step's past KV comes from the *reference* runner's previous step and
is given, as the same arrays, to both runners: every comparison is of one step, never of drift
accumulated by the candidate's own cache.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from trtllm_kit.export.io_spec import (ATTENTION_MASK, INPUT_IDS, KV, LOGITS, POSITION_IDS, WRITE_INDICES,
                                       past_name, present_name)
from trtllm_kit.models.spec import ModelSpec

NP_DTYPES = {"fp32": np.float32, "fp16": np.float16}


@dataclass
class Step:
    """One step, as the exported graph's inputs.

    Attributes:
        label: ``prefill`` or ``decode N``.
        feed: ``{input name: array}`` in the export's dtypes (int64 ids/positions/mask, float caches).
        past_len: cached tokens before this step.
    """

    label: str
    feed: OrderedDict
    past_len: int

    @property
    def new_len(self) -> int:
        return self.feed[INPUT_IDS].shape[1]


def prefill_step(spec: ModelSpec, dtype: str, batch: int, prompt_len: int, seed: int) -> Step:
    """Left-padded random prompts (row ``b`` padded by ``2 * b`` tokens) and empty caches."""
    from trtllm_kit.export.validate import left_padded_prompts, positions_from_mask

    ids, mask = left_padded_prompts(spec, batch, prompt_len, seed)
    feed = OrderedDict([(INPUT_IDS, ids.numpy()), (POSITION_IDS, positions_from_mask(mask).numpy()),
                        (ATTENTION_MASK, mask.numpy())])
    for i, layer in enumerate(spec.layers):
        for kv in KV:
            feed[past_name(i, kv)] = np.zeros((batch, layer.n_kv_heads, 0, layer.head_dim), NP_DTYPES[dtype])
    return Step("prefill", feed, 0)


def next_step(spec: ModelSpec, dtype: str, step: Step, outputs: dict, index: int) -> Step:
    """The decode step after ``step``: the greedy token of ``outputs`` (a runner's outputs for ``step``),
    one more position, the mask one longer and the runner's presents (cast to the export dtype) as past."""
    feed = step.feed
    next_ids = np.asarray(outputs[LOGITS])[:, -1].argmax(-1)[:, None].astype(np.int64)  # (B, 1)
    B = next_ids.shape[0]
    new = OrderedDict([(INPUT_IDS, next_ids), (POSITION_IDS, feed[POSITION_IDS][:, -1:] + 1),
                       (ATTENTION_MASK, np.concatenate([feed[ATTENTION_MASK], np.ones((B, 1), np.int64)], axis=1))])
    for i in range(spec.num_layers):
        for kv in KV:
            new[past_name(i, kv)] = np.array(outputs[present_name(i, kv)], dtype=NP_DTYPES[dtype])  # a copy
    return Step(f"decode {index}", new, step.past_len + step.new_len)


def generation_steps(runner, spec: ModelSpec, dtype: str, batch: int, prompt_len: int, decode_steps: int,
                     seed: int) -> list[Step]:
    """Prefill and ``decode_steps`` greedy steps, each step's past taken from ``runner``'s previous step.

    Args:
        runner: an inactive Polygraphy runner of the exported graph's I/O (the reference).
    """
    steps = [prefill_step(spec, dtype, batch, prompt_len, seed)]
    with runner:
        for k in range(decode_steps):
            outputs = runner.infer(steps[-1].feed)
            steps.append(next_step(spec, dtype, steps[-1], outputs, k + 1))
    return steps


def engine_feed(step: Step, dtypes: dict[str, np.dtype]) -> OrderedDict:
    """A portable engine's feed: the same arrays in the engine's dtypes (TensorRT 8.6 makes int64 inputs int32)."""
    return OrderedDict((name, np.ascontiguousarray(a, dtype=dtypes[name])) for name, a in step.feed.items())


def static_cache_feed(step: Step, spec: ModelSpec, max_seq: int, dtypes: dict[str, np.dtype]) -> OrderedDict:
    """The same step for a static-cache engine (``inplace``/``plugin`` KV layouts).

    Caches (B, nkv, max_seq, hd) hold the past in their first ``past_len`` positions and zeros after,
    the mask is zero-padded to ``max_seq``, and ``write_indices`` (B,) = ``past_len``.
    """
    feed = step.feed
    B, P, S = feed[INPUT_IDS].shape[0], step.past_len, step.new_len
    mask = np.zeros((B, max_seq), dtypes[ATTENTION_MASK])
    mask[:, :P + S] = feed[ATTENTION_MASK]
    out = OrderedDict([(INPUT_IDS, feed[INPUT_IDS].astype(dtypes[INPUT_IDS])),
                       (POSITION_IDS, feed[POSITION_IDS].astype(dtypes[POSITION_IDS])), (ATTENTION_MASK, mask),
                       (WRITE_INDICES, np.full((B,), P, dtypes[WRITE_INDICES]))])
    for i, layer in enumerate(spec.layers):
        for kv in KV:
            cache = np.zeros((B, layer.n_kv_heads, max_seq, layer.head_dim), dtypes[past_name(i, kv)])
            cache[:, :, :P] = feed[past_name(i, kv)]
            out[past_name(i, kv)] = cache
    return out


def zero_padding(step: Step):
    """A Polygraphy post-processing function zeroing what left padding makes layout-dependent.

    A fully padded query row attends uniformly over every cache position, and a static cache is
    ``max_seq`` long where the portable one is ``past + new``: the rows of padded positions then differ
    between the two, in ``present.*`` (from the second block on) and in per-position logits. No real
    token reads them (padded keys are masked), so both runners' copies are zeroed before comparing.
    """
    mask = step.feed[ATTENTION_MASK]  # (B, P + S)

    def zero_padded_positions(result):
        for name, arr in list(result.items()):
            if name.startswith("present."):  # (B, nkv, P + S, hd)
                result[name] = arr * mask[:, None, :, None].astype(arr.dtype)
            elif name == LOGITS and arr.shape[1] == step.new_len > 1:  # (B, S, V)
                result[name] = arr * mask[:, step.past_len:, None].astype(arr.dtype)
        return result

    return zero_padded_positions


def new_rows_only(step: Step):
    """A Polygraphy post-processing function keeping the last ``step.new_len`` positions of every ``present.*``:
    what a portable-static engine returns (this step's keys and values) out of ONNX Runtime's whole cache; the
    engine's own are unchanged by it. Left-padded positions are zeroed in both, as ``zero_padding`` does: a fully
    padded query row attends uniformly over every position it is given, one more at the engine's prefill (H200,
    TensorRT 8.6, the width preset: its padded positions' keys and values differed from the fourth block on)."""
    mask = step.feed[ATTENTION_MASK][:, -step.new_len:]  # (B, S)

    def last_rows(result):
        for name, arr in list(result.items()):
            if name.startswith("present."):  # (B, nkv, P + S or S, hd)
                result[name] = arr[:, :, arr.shape[2] - step.new_len:] * mask[:, None, :, None].astype(arr.dtype)
            elif name == LOGITS and arr.shape[1] == step.new_len > 1:  # (B, S, V)
                result[name] = arr * mask[:, :, None].astype(arr.dtype)
        return result

    return last_rows


def new_rows_feed(step: Step, dtypes: dict[str, np.dtype], values_transposed: bool = False) -> OrderedDict:
    """A portable-static engine's feed of the same step: the portable feed, with one masked cache position before
    a prefill's prompt (the layout's profiles bind a past of at least one position, so none of its tensors is
    empty); ``values_transposed``: the value caches (B, nkv, hd, past) (``EngineManifest.values_transposed``).
    Outputs: logits as ONNX Runtime's, presents its last ``new_len`` positions (``new_rows_only``; the values
    through ``values_as_rows`` first where transposed)."""
    feed = engine_feed(step, dtypes)
    for name, a in feed.items():
        if name.startswith("past_key_values."):
            if not step.past_len:  # (B, nkv, 0, hd) -> one zero position
                a = feed[name] = np.zeros(a.shape[:2] + (1,) + a.shape[3:], a.dtype)
            if values_transposed and name.endswith(".value"):
                feed[name] = np.ascontiguousarray(a.swapaxes(2, 3))
        elif name == ATTENTION_MASK and not step.past_len:
            feed[name] = np.concatenate([np.zeros((a.shape[0], 1), a.dtype), a], axis=1)
    return feed


def values_as_rows(result: dict) -> dict:
    """``result`` with every ``present.*.value`` of an engine whose values are transposed, (B, nkv, hd, new), as
    rows (B, nkv, new, hd), the export's layout (in place; returned)."""
    for name, arr in list(result.items()):
        if name.startswith("present.") and name.endswith(".value"):
            result[name] = np.ascontiguousarray(arr.swapaxes(2, 3))
    return result
