"""The exported graph's inputs and outputs, declared once.

The exporter, the validator, the TensorRT profiles and every runner derive their names, axes and dummy
inputs from this declaration, Optimum-style: ``{name: {axis: axis_name}}`` with shared axis names.
"""

from __future__ import annotations

from dataclasses import dataclass

from trtllm_kit.models.spec import ModelSpec

BATCH, SEQ, PAST, TOTAL = "batch_size", "sequence_length", "past_sequence_length", "total_sequence_length"


@dataclass(frozen=True)
class TensorIO:
    """One graph input or output: ``dims`` holds axis names (dynamic) or ints (static)."""

    name: str
    dtype: str  # "int64", "int32" or "float" (the model dtype)
    dims: tuple[str | int, ...]

    def shape(self, sizes: dict[str, int]) -> tuple[int, ...]:
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.dims)


def past_name(i: int, kv: str) -> str:
    return f"past_key_values.{i}.{kv}"


def present_name(i: int, kv: str) -> str:
    return f"present.{i}.{kv}"


def model_inputs(spec: ModelSpec) -> list[TensorIO]:
    ios = [TensorIO("input_ids", "int64", (BATCH, SEQ)), TensorIO("position_ids", "int64", (BATCH, SEQ)),
           TensorIO("attention_mask", "int64", (BATCH, TOTAL))]
    for i, layer in enumerate(spec.layers):
        for kv in ("key", "value"):
            ios.append(TensorIO(past_name(i, kv), "float", (BATCH, layer.n_kv_heads, PAST, layer.head_dim)))
    return ios


def model_outputs(spec: ModelSpec, last_only: bool) -> list[TensorIO]:
    ios = [TensorIO("logits", "float", (BATCH, 1 if last_only else SEQ, spec.vocab_size))]
    for i, layer in enumerate(spec.layers):
        for kv in ("key", "value"):
            ios.append(TensorIO(present_name(i, kv), "float", (BATCH, layer.n_kv_heads, TOTAL, layer.head_dim)))
    return ios


def axis_sizes(batch: int, seq: int, past: int) -> dict[str, int]:
    return {BATCH: batch, SEQ: seq, PAST: past, TOTAL: past + seq}


WRITE_INDICES = "write_indices"


def inplace_inputs(spec: ModelSpec, max_seq: int) -> list[TensorIO]:
    """Engine inputs in in-place KV mode: the caches and the mask span the static ``max_seq``.

    ``past_key_values.{i}.*`` are the preallocated caches, updated in place at ``write_indices``
    (one start position per sequence) and returned as the aliased ``present.{i}.*`` outputs.
    """
    ios = [TensorIO("input_ids", "int64", (BATCH, SEQ)), TensorIO("position_ids", "int64", (BATCH, SEQ)),
           TensorIO("attention_mask", "int64", (BATCH, max_seq)), TensorIO(WRITE_INDICES, "int32", (BATCH,))]
    for i, layer in enumerate(spec.layers):
        for kv in ("key", "value"):
            ios.append(TensorIO(past_name(i, kv), "float", (BATCH, layer.n_kv_heads, max_seq, layer.head_dim)))
    return ios
