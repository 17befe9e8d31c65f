"""The exported graph's inputs, outputs and anchor tensors, declared once.

The exporter, the validator, the TensorRT profiles, the KV layouts and every runner derive their names,
axes and dummy inputs from this declaration, Optimum-style: ``{name: {axis: axis_name}}`` with shared
axis names. Code that rewrites the graph (in-place and plugin KV layouts) finds tensors through the
anchor names below, which the exporter gives them; nothing else refers to graph-internal names.
"""

from __future__ import annotations

from dataclasses import dataclass

from trtllm_kit.models.spec import ModelSpec

BATCH, SEQ, PAST, TOTAL = "batch_size", "sequence_length", "past_sequence_length", "total_sequence_length"
INPUT_IDS, POSITION_IDS, ATTENTION_MASK, LOGITS = "input_ids", "position_ids", "attention_mask", "logits"
WRITE_INDICES = "write_indices"
KV = ("key", "value")


@dataclass(frozen=True)
class TensorIO:
    """One graph input or output: ``dims`` holds axis names (dynamic) or ints (static).

    Attributes:
        name: the ONNX (and engine) tensor name.
        dtype: ``"int64"``, ``"int32"`` or ``"float"`` (the model dtype).
        dims: axis names or sizes.
    """

    name: str
    dtype: str
    dims: tuple[str | int, ...]

    def shape(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """Concrete shape for axis sizes ``{axis name: size}``."""
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.dims)


def past_name(i: int, kv: str) -> str:
    return f"past_key_values.{i}.{kv}"


def present_name(i: int, kv: str) -> str:
    return f"present.{i}.{kv}"


def present_for(name: str) -> str | None:
    """The ``present.*`` output that the ``past_key_values.*`` input ``name`` becomes (None for any other name)."""
    prefix, _, rest = name.partition(".")
    i, _, kv = rest.partition(".")
    return present_name(int(i), kv) if prefix == "past_key_values" and i.isdigit() and kv in KV else None


class Anchors:
    """Names the exporter gives to graph-internal tensors that KV layouts rewire and ``check --layerwise``
    compares.

    Per block ``i``: ``q(i)`` (B, nh, S, hd) queries after rotary and 1/sqrt(hd) scaling, ``k_new(i)`` and
    ``v_new(i)`` (B, nkv, S, hd) this step's keys (after rotary) and values, ``attn(i)`` (B, nh, S, hd)
    attention output per head; ``input_norm(i)`` and ``mlp_norm(i)`` (B, S, H) the two RMSNorm outputs,
    ``attn_res(i)`` and ``mlp_res(i)`` (B, S, H) the residual stream after attention and after the MLP.
    ``FINAL_NORM`` (B, 1 or S, H) the last RMSNorm. ``QUERY_POS`` (S,) positions of the new tokens,
    ``SEQ_LEN`` [1] their count, ``AXES0`` the constant [0] (Squeeze axes).
    """

    QUERY_POS = "query_pos"
    SEQ_LEN = "seq_len"
    AXES0 = "c_axes0"
    FINAL_NORM = "final_norm"

    @staticmethod
    def input_norm(i: int) -> str:
        return f"layer{i}_input_norm"

    @staticmethod
    def attn_res(i: int) -> str:
        return f"layer{i}_attn_res"

    @staticmethod
    def mlp_norm(i: int) -> str:
        return f"layer{i}_mlp_norm"

    @staticmethod
    def mlp_res(i: int) -> str:
        return f"layer{i}_mlp_res"

    @staticmethod
    def q(i: int) -> str:
        return f"layer{i}.q"

    @staticmethod
    def norms(num_layers: int) -> list[str]:
        """Every RMSNorm's output, in graph order: each block's input and MLP norm, then the final norm."""
        return [a for i in range(num_layers) for a in (Anchors.input_norm(i), Anchors.mlp_norm(i))] + [Anchors.FINAL_NORM]

    @staticmethod
    def k_new(i: int) -> str:
        return f"layer{i}.k_new"

    @staticmethod
    def v_new(i: int) -> str:
        return f"layer{i}.v_new"

    @staticmethod
    def attn(i: int) -> str:
        return f"layer{i}.attn"


def model_inputs(spec: ModelSpec) -> list[TensorIO]:
    """The exported graph's inputs: ids, positions, mask (B, past + new), then each block's past K/V."""
    ios = [TensorIO(INPUT_IDS, "int64", (BATCH, SEQ)), TensorIO(POSITION_IDS, "int64", (BATCH, SEQ)),
           TensorIO(ATTENTION_MASK, "int64", (BATCH, TOTAL))]
    for i, layer in enumerate(spec.layers):
        for kv in KV:
            ios.append(TensorIO(past_name(i, kv), "float", (BATCH, layer.n_kv_heads, PAST, layer.head_dim)))
    return ios


def model_outputs(spec: ModelSpec, last_only: bool) -> list[TensorIO]:
    """The exported graph's outputs: logits (B, 1 or S, vocab), then each block's present K/V."""
    ios = [TensorIO(LOGITS, "float", (BATCH, 1 if last_only else SEQ, spec.vocab_size))]
    for i, layer in enumerate(spec.layers):
        for kv in KV:
            ios.append(TensorIO(present_name(i, kv), "float", (BATCH, layer.n_kv_heads, TOTAL, layer.head_dim)))
    return ios


def static_cache_inputs(spec: ModelSpec, max_seq: int) -> list[TensorIO]:
    """Engine inputs of the static-cache KV layouts: caches and mask span ``max_seq``.

    ``past_key_values.{i}.*`` are preallocated caches, updated in place at ``write_indices`` (one start
    position per sequence, int32) and returned as the aliased ``present.{i}.*`` outputs.
    """
    ios = [TensorIO(INPUT_IDS, "int64", (BATCH, SEQ)), TensorIO(POSITION_IDS, "int64", (BATCH, SEQ)),
           TensorIO(ATTENTION_MASK, "int64", (BATCH, max_seq)), TensorIO(WRITE_INDICES, "int32", (BATCH,))]
    for i, layer in enumerate(spec.layers):
        for kv in KV:
            ios.append(TensorIO(past_name(i, kv), "float", (BATCH, layer.n_kv_heads, max_seq, layer.head_dim)))
    return ios
