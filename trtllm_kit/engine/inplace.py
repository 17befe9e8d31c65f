"""In-place KV cache: the exported graph rewired onto native KV-cache update layers.

The portable graph appends new keys/values to ``past_key_values`` with a Concat and returns the
result as ``present`` (the whole cache is written every step). In in-place mode:

1. ONNX (before parsing): the caches and the attention mask get a static ``max_seq`` length, and a
   ``write_indices`` [batch] input says where the new tokens go; query positions for the causal mask
   come from it (``write_indices[0] + 0..S-1``) instead of from the mask length.
2. TensorRT network (after parsing): each ``present.{i}.{key,value}`` Concat is replaced by an
   ``IKVCacheUpdateLayer`` writing the new tokens into the cache input at ``write_indices``; attention
   reads the updated cache, and the layer's output (aliased to the cache input) becomes ``present``.

Works for any per-layer shapes, since nothing here depends on head counts.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from trtllm_kit.errors import ToolkitError
from trtllm_kit.export.io_spec import WRITE_INDICES, past_name, present_name


def inplace_onnx(onnx_path: Path, max_seq: int) -> bytes:
    """The exported graph (weights left external or inline as they are) rewritten for static caches."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    g = model.graph
    for inp in g.input:
        dims = inp.type.tensor_type.shape.dim
        if inp.name.startswith("past_key_values."):
            dims[2].Clear()
            dims[2].dim_value = max_seq
        elif inp.name == "attention_mask":
            dims[1].Clear()
            dims[1].dim_value = max_seq
    # int32: the KV-cache update layer takes no other index type.
    g.input.append(helper.make_tensor_value_info(WRITE_INDICES, TensorProto.INT32, ["batch_size"]))
    idx = next((i for i, n in enumerate(g.node) if n.output and n.output[0] == "query_pos"), None)
    if idx is None:
        raise ToolkitError(f"{onnx_path} was not written by this toolkit's exporter (no query_pos node)",
                           "re-export it with `trtllm-kit export`, or use --kv-mode portable")
    new = [
        helper.make_node("Constant", [], ["ip_start"], value=helper.make_tensor("v", TensorProto.INT64, [1], [0])),
        helper.make_node("Constant", [], ["ip_end"], value=helper.make_tensor("v", TensorProto.INT64, [1], [1])),
        helper.make_node("Slice", [WRITE_INDICES, "ip_start", "ip_end"], ["ip_first"]),
        helper.make_node("Cast", ["ip_first"], ["ip_first64"], to=TensorProto.INT64),
        helper.make_node("Squeeze", ["ip_first64", "c_axes0"], ["ip_begin"]),
        helper.make_node("Squeeze", ["seq_len", "c_axes0"], ["ip_seq"]),
        helper.make_node("Add", ["ip_begin", "ip_seq"], ["ip_stop"]),
    ]
    g.node[idx].input[0], g.node[idx].input[1] = "ip_begin", "ip_stop"
    for k, node in enumerate(new):
        g.node.insert(idx + k, node)
    return model.SerializeToString()


def rewire_kv_cache(trt, network, num_layers: int) -> int:
    """Replace every present Concat with an in-place KV-cache update; return how many were replaced."""
    outputs = {network.get_output(i).name: network.get_output(i) for i in range(network.num_outputs)}
    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    write_idx = inputs[WRITE_INDICES]
    producers = {}
    for li in range(network.num_layers):
        layer = network.get_layer(li)
        for oi in range(layer.num_outputs):
            producers[layer.get_output(oi).name] = layer
    replaced = 0
    for i in range(num_layers):
        for kv in ("key", "value"):
            old = outputs[present_name(i, kv)]
            concat = producers[old.name]
            cache = inputs[past_name(i, kv)]
            update = concat.get_input(1)  # (B, nkv, S, hd): this step's keys/values
            layer = network.add_kv_cache_update(cache, update, write_idx, trt.KVCacheMode.LINEAR)
            layer.name = f"kv_cache_update.{i}.{kv}"
            new = layer.get_output(0)
            for li in range(network.num_layers):
                consumer = network.get_layer(li)
                if consumer is layer:
                    continue
                for j in range(consumer.num_inputs):
                    t = consumer.get_input(j)
                    if t is not None and t.name == old.name:
                        consumer.set_input(j, new)
            network.unmark_output(old)
            old.name = f"{present_name(i, kv)}.concat_unused"
            new.name = present_name(i, kv)
            network.mark_output(new)
            replaced += 1
    return replaced
