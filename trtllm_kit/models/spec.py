"""Per-layer model specs: uniform models are the special case, not the rule.

Every decoder block carries its own head counts, head dim, MLP width and biases, so depth-pruned
(fewer blocks), LLM-Pruner (uniformly narrower middle blocks) and FLAP (every block different, plus
`o_proj`/`down_proj` biases) models are all one type.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from trtllm_kit.errors import ShapeError, ToolkitError

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
# MLP activations (HF ``hidden_act``) the reference, the ONNX graph and transformers compute alike.
SUPPORTED_ACTIVATIONS = ("silu", "swish", "relu", "gelu", "gelu_pytorch_tanh", "gelu_new")


@dataclass(frozen=True)
class LayerSpec:
    """One decoder block's shapes.

    Attributes:
        n_heads: query heads.
        n_kv_heads: key/value heads (== n_heads without GQA).
        head_dim: size of one head.
        mlp_dim: intermediate width of the gated MLP.
        qkv_bias: q/k/v projections carry a bias (HF ``attention_bias``).
        o_bias: ``o_proj`` carries a bias (FLAP adds one).
        gate_up_bias: gate/up projections carry a bias (HF ``mlp_bias``).
        down_bias: ``down_proj`` carries a bias (FLAP adds one).
    """

    n_heads: int
    n_kv_heads: int
    head_dim: int
    mlp_dim: int
    qkv_bias: bool = False
    o_bias: bool = False
    gate_up_bias: bool = False
    down_bias: bool = False

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def param_count(self, hidden: int) -> int:
        n = hidden * (self.q_dim + 2 * self.kv_dim) + self.q_dim * hidden + 3 * hidden * self.mlp_dim
        n += (self.q_dim + 2 * self.kv_dim) * self.qkv_bias + hidden * self.o_bias
        n += 2 * self.mlp_dim * self.gate_up_bias + hidden * self.down_bias
        return n + 2 * hidden  # two RMSNorm weights

    def check(self, index: int) -> None:
        where = f"layer {index}"
        if min(self.n_heads, self.n_kv_heads, self.head_dim, self.mlp_dim) <= 0:
            raise ShapeError(f"{where}: heads, head dim and MLP width must be positive, got {self}")
        if self.n_heads % self.n_kv_heads:
            raise ShapeError(f"{where}: {self.n_heads} query heads is not a multiple of {self.n_kv_heads} KV heads")
        if self.head_dim % 2:
            raise ShapeError(f"{where}: head dim {self.head_dim} must be even for rotary embeddings")


@dataclass(frozen=True)
class ModelSpec:
    """A LLaMA-family decoder with per-layer shapes.

    Attributes:
        name: a label for logs and metadata.
        vocab_size, hidden_size: embedding shapes.
        layers: one LayerSpec per decoder block, in order.
        rope_theta: rotary base.
        rope_scaling: HF ``rope_scaling`` dict (``rope_type`` default, linear or llama3) or None.
        rms_norm_eps: RMSNorm epsilon.
        tie_word_embeddings: ``lm_head`` shares the embedding matrix.
        max_position_embeddings: the context the model was trained for.
        source_layers: for depth-pruned models, the index each kept block had in the original model.
        hidden_act: the MLP activation (HF ``hidden_act``).
    """

    name: str
    vocab_size: int
    hidden_size: int
    layers: tuple[LayerSpec, ...]
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 2048
    source_layers: tuple[int, ...] | None = field(default=None)
    hidden_act: str = "silu"

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.source_layers is not None:
            object.__setattr__(self, "source_layers", tuple(self.source_layers))

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def is_uniform(self) -> bool:
        return len(set(self.layers)) <= 1

    def param_count(self) -> int:
        emb = self.vocab_size * self.hidden_size
        body = sum(layer.param_count(self.hidden_size) for layer in self.layers)
        return emb * (1 if self.tie_word_embeddings else 2) + body + self.hidden_size

    def check(self) -> "ModelSpec":
        """Raise ShapeError if the spec contradicts itself; return self."""
        if not self.layers:
            raise ShapeError(f"{self.name}: a model needs at least one decoder block")
        if self.vocab_size <= 0 or self.hidden_size <= 0:
            raise ShapeError(f"{self.name}: vocab and hidden size must be positive")
        for i, layer in enumerate(self.layers):
            layer.check(i)
        rope_type = rope_type_of(self.rope_scaling)
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ToolkitError(f"{self.name}: rope_scaling type {rope_type!r} is not supported",
                               f"supported: {', '.join(SUPPORTED_ROPE_TYPES)}")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ToolkitError(f"{self.name}: hidden_act {self.hidden_act!r} is not supported",
                               f"supported: {', '.join(SUPPORTED_ACTIVATIONS)}")
        return self

    def weight_bytes(self, bytes_per_param: int = 2) -> int:
        """Bytes of all weights at ``bytes_per_param`` (2 for fp16/bf16): what a decode step streams."""
        return self.param_count() * bytes_per_param

    def with_layers(self, keep: list[int], name: str | None = None) -> "ModelSpec":
        """The depth-pruned spec keeping the blocks at indices ``keep`` (in the current numbering)."""
        src = self.source_layers or tuple(range(self.num_layers))
        return dataclasses.replace(self, name=name or self.name, layers=tuple(self.layers[i] for i in keep),
                                   source_layers=tuple(src[i] for i in keep))


def rope_type_of(rope_scaling: dict | None) -> str:
    if not rope_scaling:
        return "default"
    return rope_scaling.get("rope_type", rope_scaling.get("type", "default"))


def rope_inv_freq(spec: ModelSpec, head_dim: int):
    """Rotary inverse frequencies (float32 tensor [head_dim/2]) for one head dim, scaling applied.

    Computed in float32 exactly as transformers' ``default``, ``linear`` and ``llama3`` rope
    initialisations do, so the reference, the ONNX graph and transformers agree bit for bit.
    """
    import torch

    inv = 1.0 / (spec.rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    kind, cfg = rope_type_of(spec.rope_scaling), spec.rope_scaling or {}
    if kind == "linear":
        inv = inv / cfg["factor"]
    elif kind == "llama3":
        factor, low, high = cfg["factor"], cfg["low_freq_factor"], cfg["high_freq_factor"]
        old = cfg["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / high) * ~(wavelen > old / low)
        inv = torch.where(medium, smoothed, scaled)
    return inv
