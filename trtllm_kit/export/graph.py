"""Build the ONNX graph of a ModelSpec directly, streaming weights to disk one tensor at a time.

Writing the graph from the spec (instead of tracing a module) keeps memory at one tensor, lets every
block have its own shapes, and keeps the graph to ops TensorRT 8.6 and TensorRT-RTX parse: the only
shape computation is two Shape ops and a Range per prompt, shared by all blocks.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from trtllm_kit.export.io_spec import model_inputs, model_outputs, present_name, past_name
from trtllm_kit.models.spec import ModelSpec, rope_inv_freq
from trtllm_kit.models.weights import WeightSource, tensor_shapes
from trtllm_kit.utils.dtypes import TORCH_DTYPES

ONNX_DTYPES = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
EXTERNAL_THRESHOLD = 2 << 30  # protobuf's limit: larger models keep their weights beside the graph
ALIGN = 4096


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

    def __init__(self, writer: WeightWriter, dtype: str):
        self.writer, self.dtype = writer, dtype
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


def _rms_norm(g: GraphBuilder, x: str, weight: str, eps: str, name: str) -> str:
    # Computed in float32 whatever the model dtype, as transformers' LlamaRMSNorm does.
    xf = x if g.dtype == "fp32" else g.cast(x, TensorProto.FLOAT)
    var = g.op("ReduceMean", g.op("Mul", xf, xf), axes=[-1], keepdims=1)
    y = g.op("Mul", xf, g.op("Reciprocal", g.op("Sqrt", g.op("Add", var, eps))))
    y = y if g.dtype == "fp32" else g.cast(y, g.onnx_dtype)
    return g.op("Mul", y, weight, name=name)


def _linear(g: GraphBuilder, x: str, weights: WeightSource, prefix: str, has_bias: bool, names: set) -> str:
    w = g.weight(prefix + ".weight", weights.get(prefix + ".weight").t())  # (in, out)
    y = g.op("MatMul", x, w)
    if has_bias:
        y = g.op("Add", y, g.weight(prefix + ".bias", weights.get(prefix + ".bias")))
    names.add(prefix + ".weight")
    return y


def _rotate(g: GraphBuilder, x: str, cos: str, sin: str) -> str:
    x1, x2 = g.op("Split", x, axis=-1, n_out=2)
    rot = g.op("Concat", g.op("Neg", x2), x1, axis=-1)
    return g.op("Add", g.op("Mul", x, cos), g.op("Mul", rot, sin))


def build_graph(spec: ModelSpec, weights: WeightSource, dtype: str, last_only: bool, out_dir: Path,
                opset: int = 17, progress=None) -> tuple[onnx.ModelProto, str]:
    """Build ``model.onnx`` for ``spec`` in ``out_dir`` (weights external when over 2 GB).

    Returns:
        The model proto (weights external or inline) and the sha256 of the weights.
    """
    bytes_per = torch.tensor([], dtype=TORCH_DTYPES[dtype]).element_size()
    external = spec.param_count() * bytes_per > EXTERNAL_THRESHOLD - (64 << 20)
    writer = WeightWriter(out_dir / "model.onnx.data" if external else None)
    g = GraphBuilder(writer, dtype)
    fdt = g.onnx_dtype
    fmin = float(torch.finfo(torch.float32).min)
    used: set[str] = set()

    # Shape subgraph, shared by every block: S = new tokens, T = past + new.
    # Plain Shape + Gather (not Shape's start/end attributes) and no Cast to bool: TensorRT 8.6's parser.
    zero, one = g.const("c_zero", 0, np.int64), g.const("c_one", 1, np.int64)
    axis1 = g.const("c_axes1", [1], np.int64)
    s_len = g.op("Gather", g.op("Shape", "input_ids"), axis1, axis=0, name="seq_len")  # [1]
    t_len = g.op("Gather", g.op("Shape", "attention_mask"), axis1, axis=0, name="total_len")  # [1]
    t_scalar = g.op("Squeeze", t_len, g.const("c_axes0", [0], np.int64))
    p_scalar = g.op("Squeeze", g.op("Sub", t_len, s_len), "c_axes0")
    k_pos = g.op("Range", zero, t_scalar, one, name="key_pos")  # (T,)
    q_pos = g.op("Range", p_scalar, t_scalar, one, name="query_pos")  # (S,)
    later = g.op("Greater", g.op("Unsqueeze", k_pos, "c_axes0"),
                 g.op("Unsqueeze", q_pos, axis1))  # (S, T)
    causal = g.op("Unsqueeze", g.op("Not", later), g.const("c_axes01", [0, 1], np.int64))  # (1, 1, S, T)
    padding = g.op("Unsqueeze", g.op("Greater", "attention_mask", zero), g.const("c_axes12", [1, 2], np.int64))
    allowed = g.op("And", causal, padding, name="attn_allowed")  # (B, 1, S, T)
    allowed5 = None
    neg = g.const("c_mask_value", fmin, np.float32)
    eps = g.const("c_rms_eps", spec.rms_norm_eps, np.float32)

    x = g.op("Gather", g.weight("model.embed_tokens.weight", weights.get("model.embed_tokens.weight")),
             "input_ids", axis=0, name="embeddings")  # (B, S, H)
    used.add("model.embed_tokens.weight")
    pos_f = g.op("Unsqueeze", g.cast("position_ids", TensorProto.FLOAT), g.const("c_axes_last", [-1], np.int64))
    rope: dict[int, tuple[str, str]] = {}

    for i, L in enumerate(spec.layers):
        p = f"model.layers.{i}."
        if progress:
            progress(i)
        if L.head_dim not in rope:
            inv = g.const(f"rope_inv_freq_{L.head_dim}", rope_inv_freq(spec, L.head_dim).numpy())
            freqs = g.op("Mul", pos_f, inv)  # (B, S, hd/2)
            emb = g.op("Unsqueeze", g.op("Concat", freqs, freqs, axis=-1), "c_axes1")  # (B, 1, S, hd)
            rope[L.head_dim] = (g.cast(g.op("Cos", emb), fdt), g.cast(g.op("Sin", emb), fdt))
        cos, sin = rope[L.head_dim]
        h = _rms_norm(g, x, g.weight(p + "input_layernorm.weight", weights.get(p + "input_layernorm.weight")),
                      eps, name=f"layer{i}_input_norm")

        def heads(y: str, n: int) -> str:  # (B, S, n*hd) -> (B, n, S, hd)
            return g.op("Transpose", g.op("Reshape", y, g.const(f"shape_l{i}_{n}_{g.count}", [0, 0, n, L.head_dim],
                                                                np.int64)), perm=[0, 2, 1, 3])

        q = heads(_linear(g, h, weights, p + "self_attn.q_proj", L.qkv_bias, used), L.n_heads)
        k = heads(_linear(g, h, weights, p + "self_attn.k_proj", L.qkv_bias, used), L.n_kv_heads)
        v = heads(_linear(g, h, weights, p + "self_attn.v_proj", L.qkv_bias, used), L.n_kv_heads)
        scale = g.cast(g.const(f"c_scale_{i}", L.head_dim ** -0.5, np.float32), fdt)
        q = g.op("Mul", _rotate(g, q, cos, sin), scale)
        k = _rotate(g, k, cos, sin)
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
            attn = g.op("MatMul", probs, v_all)  # (B, nh, S, hd)
        else:
            attn = g.op("MatMul", probs, g.op("Unsqueeze", v_all, "c_axes2"))
            attn = g.op("Reshape", attn, g.const(f"shape_gqa_o{i}", [0, L.n_heads, -1, L.head_dim], np.int64))
        attn = g.op("Reshape", g.op("Transpose", attn, perm=[0, 2, 1, 3]),
                    g.const(f"shape_merge{i}", [0, 0, L.q_dim], np.int64))  # (B, S, nh*hd)
        x = g.op("Add", x, _linear(g, attn, weights, p + "self_attn.o_proj", L.o_bias, used), name=f"layer{i}_attn_res")
        h = _rms_norm(g, x, g.weight(p + "post_attention_layernorm.weight",
                                     weights.get(p + "post_attention_layernorm.weight")), eps, name=f"layer{i}_mlp_norm")
        gate = _linear(g, h, weights, p + "mlp.gate_proj", L.gate_up_bias, used)
        up = _linear(g, h, weights, p + "mlp.up_proj", L.gate_up_bias, used)
        act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)
        x = g.op("Add", x, _linear(g, act, weights, p + "mlp.down_proj", L.down_bias, used), name=f"layer{i}_mlp_res")

    if last_only:
        x = g.op("Slice", x, g.const("c_last_start", [-1], np.int64), g.const("c_last_end", [np.iinfo(np.int64).max],
                                                                             np.int64), "c_axes1")
    x = _rms_norm(g, x, g.weight("model.norm.weight", weights.get("model.norm.weight")), eps, name="final_norm")
    if spec.tie_word_embeddings:
        head = g.op("Transpose", "model.embed_tokens.weight", perm=[1, 0])
    else:
        head = g.weight("lm_head.weight", weights.get("lm_head.weight").t())
    g.op("MatMul", x, head, name="logits")
    writer.close()

    def vi(io, elem):
        return helper.make_tensor_value_info(io.name, elem, list(io.dims))

    elem = {"int64": TensorProto.INT64, "float": fdt}
    graph = helper.make_graph(g.nodes, spec.name, [vi(t, elem[t.dtype]) for t in model_inputs(spec)],
                              [vi(t, elem[t.dtype]) for t in model_outputs(spec, last_only)], initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="trtllm-kit")
    model.ir_version = 8  # readable by TensorRT 8.6's parser and ONNX Runtime alike
    expected = set(tensor_shapes(spec))
    assert expected <= {t.name for t in g.inits} | used, "a weight was left out of the graph"
    return model, writer.sha.hexdigest()


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Save the graph; external data was already written by the WeightWriter."""
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    os.chmod(path, 0o644)
