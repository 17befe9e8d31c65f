"""Build the ONNX graph of a ModelSpec directly, streaming weights to disk one tensor at a time.

Writing the graph from the spec (instead of tracing a module) keeps memory at one tensor, lets every
block have its own shapes, and keeps the graph to ops TensorRT 8.6 and TensorRT-RTX parse: the only
shape computation is two Shape ops and a Range per prompt, shared by all blocks.

The graph is safe in fp16 even where a builder runs everything in half precision (TensorRT 8.6's
FP16 flag has no strong typing): rotary cos/sin come from a table indexed by position (no angle math
in the graph), RMSNorm divides by the row's largest magnitude before squaring (no overflow below
fp16's range) and masked attention scores use fp16's lowest finite value (no -inf, so a fully padded
row gives a uniform softmax, never NaN).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from trtllm_kit.errors import ToolkitError
from trtllm_kit.export.io_spec import (ATTENTION_MASK, INPUT_IDS, LOGITS, POSITION_IDS, Anchors, model_inputs,
                                       model_outputs, past_name, present_name)
from trtllm_kit.models.spec import ModelSpec, rope_inv_freq
from trtllm_kit.models.weights import WeightSource, tensor_shapes
from trtllm_kit.utils.dtypes import TORCH_DTYPES

ONNX_DTYPES = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
EXTERNAL_THRESHOLD = 2 << 30  # protobuf's limit: larger models keep their weights beside the graph
ALIGN = 4096
# Opsets written (the Reduce ops take axes as an input from 18 on); TensorRT 8.6's parser reads up to 17.
SUPPORTED_OPSETS = (17, 18, 19, 20, 21)
MASK_VALUE = -65504.0  # fp16's lowest finite value: exp() of it is 0 next to any real score
RMS_FLOOR = 1e-4  # guards the max-magnitude divisor of an all-zero row


class WeightWriter:
    """Turns torch tensors into ONNX initializers, inline or appended to one external data file.

    Also hashes every byte written, so ``export.json`` can identify the weights.
    """

    def __init__(self, data_path: Path | None):
        self.data_path = data_path
        self.file = open(data_path, "wb") if data_path else None
        self.offset = 0
        self.sha = hashlib.sha256()

    def initializer(self, name: str, t: torch.Tensor, onnx_dtype: int) -> TensorProto:
        t = t.contiguous()
        if t.dtype == torch.bfloat16:
            raw = t.view(torch.int16).numpy().tobytes()
        else:
            raw = t.numpy().tobytes()
        self.sha.update(name.encode())
        self.sha.update(raw)
        proto = TensorProto(name=name, data_type=onnx_dtype, dims=list(t.shape))
        if self.file is None:
            proto.raw_data = raw
            return proto
        pad = -self.offset % ALIGN
        self.file.write(b"\0" * pad)
        self.offset += pad
        self.file.write(raw)
        proto.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.data_path.name), ("offset", str(self.offset)), ("length", str(len(raw)))):
            proto.external_data.add(key=k, value=v)
        self.offset += len(raw)
        return proto

    def close(self) -> None:
        if self.file:
            self.file.close()


class GraphBuilder:
    """Accumulates nodes and initializers; ``op`` returns the output name(s) of a new node."""

    def __init__(self, writer: WeightWriter, dtype: str, opset: int):
        self.writer, self.dtype, self.opset = writer, dtype, opset
        self.onnx_dtype = ONNX_DTYPES[dtype]
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.count = 0
        self.const_names: set[str] = set()

    def op(self, op_type: str, *inputs: str, n_out: int = 1, name: str | None = None, **attrs):
        self.count += 1
        base = name or f"{op_type}_{self.count}"
        outs = [base] if n_out == 1 else [f"{base}_{k}" for k in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=f"{base}/node", **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, name: str, value, dtype=None) -> str:
        """A small inline constant; asking again for the same name reuses it."""
        if name in self.const_names:
            return name
        self.const_names.add(name)
        arr = np.asarray(value, dtype=dtype)
        self.inits.append(onnx.numpy_helper.from_array(arr, name))
        return name

    def weight(self, name: str, t: torch.Tensor) -> str:
        self.inits.append(self.writer.initializer(name, t.to(TORCH_DTYPES[self.dtype]), self.onnx_dtype))
        return name

    def cast(self, x: str, to: int) -> str:
        return self.op("Cast", x, to=to)

    def reduce(self, op_type: str, x: str, axis: int) -> str:
        """A Reduce* op over one axis, keeping it, in the form the opset wants (axes input from 18)."""
        if self.opset >= 18:
            return self.op(op_type, x, self.const(f"c_axes{axis}".replace("-", "m"), [axis], np.int64), keepdims=1)
        return self.op(op_type, x, axes=[axis], keepdims=1)


def _rms_norm(g: GraphBuilder, x: str, weight: str, eps: str, name: str) -> str:
    """RMSNorm in float32 (as transformers' LlamaRMSNorm), divided by the row's max magnitude first.

    x / sqrt(mean(x^2) + eps) == s / sqrt(mean(s^2) + eps / m^2) with s = x / m: the squares stay <= 1,
    so a builder that demotes this island to fp16 cannot overflow it.
    """
    xf = x if g.dtype == "fp32" else g.cast(x, TensorProto.FLOAT)
    m = g.op("Max", g.reduce("ReduceMax", g.op("Abs", xf), -1), g.const("c_rms_floor", RMS_FLOOR, np.float32))
    r = g.op("Reciprocal", m)  # (B, S, 1)
    s = g.op("Mul", xf, r)
    ms = g.reduce("ReduceMean", g.op("Mul", s, s), -1)
    y = g.op("Mul", s, g.op("Reciprocal", g.op("Sqrt", g.op("Add", ms, g.op("Mul", eps, g.op("Mul", r, r))))))
    y = y if g.dtype == "fp32" else g.cast(y, g.onnx_dtype)
    return g.op("Mul", y, weight, name=name)


def _linear(g: GraphBuilder, x: str, weights: WeightSource, prefix: str, has_bias: bool, names: set) -> str:
    w = g.weight(prefix + ".weight", weights.get(prefix + ".weight").t())  # (in, out)
    y = g.op("MatMul", x, w)
    if has_bias:
        y = g.op("Add", y, g.weight(prefix + ".bias", weights.get(prefix + ".bias")))
    names.add(prefix + ".weight")
    return y


def _rotate(g: GraphBuilder, x: str, cos: str, sin: str, half: int, name: str | None = None) -> str:
    x1, x2 = g.op("Split", x, g.const(f"c_split_{half}", [half, half], np.int64), axis=-1, n_out=2)
    rot = g.op("Concat", g.op("Neg", x2), x1, axis=-1)
    return g.op("Add", g.op("Mul", x, cos), g.op("Mul", rot, sin), name=name)


def _activation(g: GraphBuilder, x: str, kind: str) -> str:
    """The MLP activation of HF ``hidden_act`` (see SUPPORTED_ACTIVATIONS)."""
    if kind in ("silu", "swish"):
        return g.op("Mul", x, g.op("Sigmoid", x))
    if kind == "relu":
        return g.op("Relu", x)
    c = lambda name, v: g.cast(g.const(name, v, np.float32), g.onnx_dtype)  # noqa: E731
    if kind == "gelu":  # 0.5 x (1 + erf(x / sqrt 2))
        erf = g.op("Erf", g.op("Mul", x, c("c_inv_sqrt2", 2 ** -0.5)))
        return g.op("Mul", g.op("Mul", x, c("c_half", 0.5)), g.op("Add", erf, c("c_one_f", 1.0)))
    # tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    inner = g.op("Add", x, g.op("Mul", g.op("Mul", g.op("Mul", x, x), x), c("c_gelu_a", 0.044715)))
    t = g.op("Tanh", g.op("Mul", inner, c("c_gelu_b", (2 / np.pi) ** 0.5)))
    return g.op("Mul", g.op("Mul", x, c("c_half", 0.5)), g.op("Add", t, c("c_one_f", 1.0)))


def rope_table(spec: ModelSpec, head_dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (max_position_embeddings, head_dim), computed in float32 then cast, exactly as
    transformers and the reference compute them per position."""
    inv = rope_inv_freq(spec, head_dim)
    pos = torch.arange(spec.max_position_embeddings, dtype=torch.float32)
    freqs = pos[:, None] * inv[None, :]  # (P, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def build_graph(spec: ModelSpec, weights: WeightSource, dtype: str, last_only: bool, out_dir: Path,
                opset: int = 17, progress=None) -> tuple[onnx.ModelProto, str]:
    """Build ``model.onnx`` for ``spec`` in ``out_dir`` (weights external when over 2 GB).

    Returns:
        The model proto (weights external or inline) and the sha256 of the weights.

    Raises:
        ToolkitError: an opset this exporter does not write.
    """
    if opset not in SUPPORTED_OPSETS:
        raise ToolkitError(f"opset {opset} is not supported", f"use one of {', '.join(map(str, SUPPORTED_OPSETS))} "
                           "(TensorRT 8.6 reads up to 17)")
    bytes_per = torch.tensor([], dtype=TORCH_DTYPES[dtype]).element_size()
    external = spec.param_count() * bytes_per > EXTERNAL_THRESHOLD - (64 << 20)
    writer = WeightWriter(out_dir / "model.onnx.data" if external else None)
    g = GraphBuilder(writer, dtype, opset)
    fdt = g.onnx_dtype
    used: set[str] = set()

    # Shape subgraph, shared by every block: S = new tokens, T = past + new.
    # Plain Shape + Gather (not Shape's start/end attributes) and no Cast to bool: TensorRT 8.6's parser.
    zero, one = g.const("c_zero", 0, np.int64), g.const("c_one", 1, np.int64)
    axis1 = g.const("c_axes1", [1], np.int64)
    axes0 = g.const(Anchors.AXES0, [0], np.int64)
    s_len = g.op("Gather", g.op("Shape", INPUT_IDS), axis1, axis=0, name=Anchors.SEQ_LEN)  # [1]
    t_len = g.op("Gather", g.op("Shape", ATTENTION_MASK), axis1, axis=0, name="total_len")  # [1]
    t_scalar = g.op("Squeeze", t_len, axes0)
    p_scalar = g.op("Squeeze", g.op("Sub", t_len, s_len), axes0)
    k_pos = g.op("Range", zero, t_scalar, one, name="key_pos")  # (T,)
    q_pos = g.op("Range", p_scalar, t_scalar, one, name=Anchors.QUERY_POS)  # (S,)
    later = g.op("Greater", g.op("Unsqueeze", k_pos, axes0), g.op("Unsqueeze", q_pos, axis1))  # (S, T)
    causal = g.op("Unsqueeze", g.op("Not", later), g.const("c_axes01", [0, 1], np.int64))  # (1, 1, S, T)
    padding = g.op("Unsqueeze", g.op("Greater", ATTENTION_MASK, zero), g.const("c_axes12", [1, 2], np.int64))
    allowed = g.op("And", causal, padding, name="attn_allowed")  # (B, 1, S, T)
    allowed5 = None
    neg = g.const("c_mask_value", MASK_VALUE, np.float32)
    eps = g.const("c_rms_eps", spec.rms_norm_eps, np.float32)

    x = g.op("Gather", g.weight("model.embed_tokens.weight", weights.get("model.embed_tokens.weight")),
             INPUT_IDS, axis=0, name="embeddings")  # (B, S, H)
    used.add("model.embed_tokens.weight")
    rope: dict[int, tuple[str, str]] = {}

    for i, L in enumerate(spec.layers):
        p = f"model.layers.{i}."
        if progress:
            progress(i)
        if L.head_dim not in rope:  # (B, 1, S, hd) cos/sin gathered from per-position tables
            cos_t, sin_t = rope_table(spec, L.head_dim, TORCH_DTYPES[dtype])
            rope[L.head_dim] = tuple(
                g.op("Unsqueeze", g.op("Gather", g.weight(f"rope_{f}_{L.head_dim}", t), POSITION_IDS, axis=0), axis1)
                for f, t in (("cos", cos_t), ("sin", sin_t)))
        cos, sin = rope[L.head_dim]
        h = _rms_norm(g, x, g.weight(p + "input_layernorm.weight", weights.get(p + "input_layernorm.weight")),
                      eps, name=Anchors.input_norm(i))

        def heads(y: str, n: int, name: str | None = None) -> str:  # (B, S, n*hd) -> (B, n, S, hd)
            return g.op("Transpose", g.op("Reshape", y, g.const(f"shape_l{i}_{n}_{g.count}", [0, 0, n, L.head_dim],
                                                                np.int64)), perm=[0, 2, 1, 3], name=name)

        q = heads(_linear(g, h, weights, p + "self_attn.q_proj", L.qkv_bias, used), L.n_heads)
        k = heads(_linear(g, h, weights, p + "self_attn.k_proj", L.qkv_bias, used), L.n_kv_heads)
        v = heads(_linear(g, h, weights, p + "self_attn.v_proj", L.qkv_bias, used), L.n_kv_heads, name=Anchors.v_new(i))
        scale = g.cast(g.const(f"c_scale_{L.head_dim}", L.head_dim ** -0.5, np.float32), fdt)
        q = g.op("Mul", _rotate(g, q, cos, sin, L.head_dim // 2), scale, name=Anchors.q(i))  # (B, nh, S, hd)
        k = _rotate(g, k, cos, sin, L.head_dim // 2, name=Anchors.k_new(i))  # (B, nkv, S, hd)
        k_all = g.op("Concat", past_name(i, "key"), k, axis=2, name=present_name(i, "key"))  # (B, nkv, T, hd)
        v_all = g.op("Concat", past_name(i, "value"), v, axis=2, name=present_name(i, "value"))
        rep = L.n_heads // L.n_kv_heads
        if rep == 1:
            scores = g.op("MatMul", q, g.op("Transpose", k_all, perm=[0, 1, 3, 2]))  # (B, nh, S, T)
            mask = allowed
        else:  # grouped query attention without materialising repeated keys
            q = g.op("Reshape", q, g.const(f"shape_gqa_q{i}", [0, L.n_kv_heads, rep, -1, L.head_dim], np.int64))
            k5 = g.op("Unsqueeze", k_all, g.const("c_axes2", [2], np.int64))  # (B, nkv, 1, T, hd)
            scores = g.op("MatMul", q, g.op("Transpose", k5, perm=[0, 1, 2, 4, 3]))  # (B, nkv, rep, S, T)
            allowed5 = allowed5 or g.op("Unsqueeze", allowed, "c_axes2")
            mask = allowed5
        scores = g.op("Where", mask, g.cast(scores, TensorProto.FLOAT), neg)
        probs = g.cast(g.op("Softmax", scores, axis=-1), fdt)
        if rep == 1:
            attn = g.op("MatMul", probs, v_all, name=Anchors.attn(i))  # (B, nh, S, hd)
        else:
            attn = g.op("MatMul", probs, g.op("Unsqueeze", v_all, "c_axes2"))
            attn = g.op("Reshape", attn, g.const(f"shape_gqa_o{i}", [0, L.n_heads, -1, L.head_dim], np.int64),
                        name=Anchors.attn(i))
        attn = g.op("Reshape", g.op("Transpose", attn, perm=[0, 2, 1, 3]),
                    g.const(f"shape_merge{i}", [0, 0, L.q_dim], np.int64))  # (B, S, nh*hd)
        x = g.op("Add", x, _linear(g, attn, weights, p + "self_attn.o_proj", L.o_bias, used), name=Anchors.attn_res(i))
        h = _rms_norm(g, x, g.weight(p + "post_attention_layernorm.weight",
                                     weights.get(p + "post_attention_layernorm.weight")), eps, name=Anchors.mlp_norm(i))
        gate = _linear(g, h, weights, p + "mlp.gate_proj", L.gate_up_bias, used)
        up = _linear(g, h, weights, p + "mlp.up_proj", L.gate_up_bias, used)
        act = g.op("Mul", _activation(g, gate, spec.hidden_act), up)
        x = g.op("Add", x, _linear(g, act, weights, p + "mlp.down_proj", L.down_bias, used), name=Anchors.mlp_res(i))

    if last_only:
        x = g.op("Slice", x, g.const("c_last_start", [-1], np.int64), g.const("c_last_end", [np.iinfo(np.int64).max],
                                                                             np.int64), axis1)
    x = _rms_norm(g, x, g.weight("model.norm.weight", weights.get("model.norm.weight")), eps, name=Anchors.FINAL_NORM)
    if spec.tie_word_embeddings:
        head = g.op("Transpose", "model.embed_tokens.weight", perm=[1, 0])
    else:
        head = g.weight("lm_head.weight", weights.get("lm_head.weight").t())
    g.op("MatMul", x, head, name=LOGITS)
    writer.close()

    def vi(io, elem):
        return helper.make_tensor_value_info(io.name, elem, list(io.dims))

    elem = {"int64": TensorProto.INT64, "float": fdt}
    graph = helper.make_graph(g.nodes, spec.name, [vi(t, elem[t.dtype]) for t in model_inputs(spec)],
                              [vi(t, elem[t.dtype]) for t in model_outputs(spec, last_only)], initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="trtllm-kit")
    # The lowest IR version that carries this opset: IR 8 for opset 17 is what TensorRT 8.6's parser reads.
    model.ir_version = max(8, helper.find_min_ir_version_for([helper.make_opsetid("", opset)], ignore_unknown=True))
    expected = set(tensor_shapes(spec))
    assert expected <= {t.name for t in g.inits} | used, "a weight was left out of the graph"
    return model, writer.sha.hexdigest()


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Save the graph; external data was already written by the WeightWriter."""
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    os.chmod(path, 0o644)
