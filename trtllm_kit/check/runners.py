"""Polygraphy runners for the three things a check compares: the PyTorch reference, ONNX Runtime and TensorRT.

Import this module only after ``tools.require_polygraphy()``. ONNX Runtime and portable TensorRT engines
run through Polygraphy's own ``OnnxrtRunner`` and ``TrtRunner``; two runners are ours, on Polygraphy's
``BaseRunner`` contract, where Polygraphy's would compare the wrong thing:

- ``ReferenceRunner``: Polygraphy's ``PytRunner`` moves every input to CUDA and feeds them by position;
  ours runs the reference module where it lives, feeds it by name and names its outputs (and, for
  ``--layerwise``, its intermediate tensors) like the exported graph's.
- ``StaticCacheTrtRunner``: a static-cache engine's ``present.*`` must be bound to the memory of its
  ``past_key_values.*`` (the engine updates the cache in place). TensorRT 8.6 cannot declare that
  aliasing, so Polygraphy's ``TrtRunner`` would give each present a fresh buffer.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.backend.pyt import PytRunner
from polygraphy.common import TensorMetadata

from trtllm_kit.check.feeds import NP_DTYPES
from trtllm_kit.export.io_spec import (ATTENTION_MASK, INPUT_IDS, KV, LOGITS, POSITION_IDS, WRITE_INDICES, Anchors,
                                       model_inputs, model_outputs, past_name, present_for, present_name)
from trtllm_kit.models.spec import ModelSpec


class ReferenceRunner(PytRunner):
    """The toolkit's PyTorch reference module with the exported graph's inputs and outputs.

    Args:
        model: the reference module (``models.reference.reference_from_weights``), any dtype/device.
        spec: its spec. dtype: the export's dtype (the dtype of the caches it is fed). last_only: logits of
            the last position only, as the export.
        marked: graph anchor names (``io_spec.Anchors``) to return too, captured by forward hooks.
    """

    def __init__(self, model, spec: ModelSpec, dtype: str, last_only: bool, marked: list[str] = (),
                 name: str = "reference"):
        meta = TensorMetadata()
        for io in model_inputs(spec):
            meta.add(io.name, dtype=np.int64 if io.dtype == "int64" else NP_DTYPES[dtype], shape=list(io.dims))
        super().__init__(lambda: model, meta, [io.name for io in model_outputs(spec, last_only)] + list(marked),
                         name=name)
        self.spec, self.last_only, self.marked = spec, last_only, set(marked)

    def infer_impl(self, feed_dict):
        model = self.model
        p = next(model.parameters())
        t = {name: torch.from_numpy(np.ascontiguousarray(a)).to(p.device) for name, a in feed_dict.items()}
        past = [tuple(t[past_name(i, kv)].to(p.dtype) for kv in KV) for i in range(self.spec.num_layers)]
        captured: dict[str, torch.Tensor] = {}
        handles = self._hooks(model, captured) if self.marked else []
        start = time.time()
        try:
            with torch.no_grad():
                logits, presents = model(t[INPUT_IDS], t[POSITION_IDS], t[ATTENTION_MASK], past,
                                         last_only=self.last_only)
        finally:
            for h in handles:
                h.remove()
        self.inference_time = time.time() - start
        out = OrderedDict([(LOGITS, logits)])
        for i, kv_pair in enumerate(presents):
            for kv, x in zip(KV, kv_pair):
                out[present_name(i, kv)] = x
        out.update((name, captured[name]) for name in self.output_names if name in captured)
        return OrderedDict((name, x.float().cpu().numpy()) for name, x in out.items())

    def _hooks(self, model, captured: dict) -> list:
        """Forward hooks that store the reference's tensors under the graph's anchor names."""
        def keep(name, pick):
            if name not in self.marked:
                return None
            return lambda module, args, *out: captured.__setitem__(name, pick(args, out[0] if out else None))

        def heads(i):  # o_proj's input (B, S, nh*hd) -> the graph's attention output (B, nh, S, hd)
            L = self.spec.layers[i]
            return lambda args, out: args[0].view(*args[0].shape[:2], L.n_heads, L.head_dim).transpose(1, 2)

        hooks = []
        for i, block in enumerate(model.model.layers):
            hooks += [(block.input_layernorm, False, keep(Anchors.input_norm(i), lambda a, o: o)),
                      (block.self_attn.o_proj, True, keep(Anchors.attn(i), heads(i))),
                      (block.post_attention_layernorm, True, keep(Anchors.attn_res(i), lambda a, o: a[0])),
                      (block.post_attention_layernorm, False, keep(Anchors.mlp_norm(i), lambda a, o: o)),
                      (block, False, keep(Anchors.mlp_res(i), lambda a, o: o[0]))]
        hooks.append((model.model.norm, False, keep(Anchors.FINAL_NORM, lambda a, o: o)))
        return [module.register_forward_pre_hook(fn) if pre else module.register_forward_hook(fn)
                for module, pre, fn in hooks if fn is not None]


def onnxrt_runner(onnx_path: Path, marked: list[str] = (), name: str = "onnxrt"):
    """Polygraphy's ``OnnxrtRunner`` on the CPU, with ``marked`` tensors added to the graph's outputs.

    With marked tensors, the graph is loaded without its external weights and rewritten by Polygraphy's
    ``ModifyOutputs``; ONNX Runtime reads the weights from the export directory, so models of any size
    work. The session is created once and reused by every ``Comparator.run``.
    """
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    if not marked:
        return OnnxrtRunner(SessionFromOnnx(str(onnx_path))(), name=name)
    import onnx
    import onnxruntime as ort
    from polygraphy.backend.onnx import ModifyOutputs

    model = onnx.load(str(onnx_path), load_external_data=False)
    model = ModifyOutputs(model, outputs=[o.name for o in model.graph.output] + list(marked))()
    options = ort.SessionOptions()
    options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                     str(Path(onnx_path).parent.absolute()))
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return OnnxrtRunner(session, name=name)


class StaticCacheTrtRunner(BaseRunner):
    """Runs one step of a static-cache engine, binding each ``present.*`` to its ``past_key_values.*``.

    Returns the engine's outputs named as the exported graph's: ``logits`` and each present cut to the
    ``write_indices + new tokens`` positions this step has written, so they compare with ONNX Runtime's.

    Args:
        trt: the engine's TensorRT module. engine: a deserialized ``ICudaEngine``. profile: the optimization
            profile to run.
    """

    def __init__(self, trt, engine, profile: int, name: str = "tensorrt"):
        super().__init__(name=name, prefix="trt-static-cache-runner")
        self.trt, self.engine, self.profile = trt, engine, profile

    def activate_impl(self):
        from polygraphy.backend.trt import util as trt_util

        from trtllm_kit.engine.loading import check_bindable

        check_bindable(self.trt, self.engine, same_cache_dtype=True)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.current_stream()
        self.context.set_optimization_profile_async(self.profile, self.stream.cuda_stream)
        self.trt_util = trt_util

    def get_input_metadata_impl(self):
        return self.trt_util.get_metadata_from_engine(self.engine, self.context, mode=self.trt.TensorIOMode.INPUT)

    def infer_impl(self, feed_dict):
        ctx = self.context
        bound = {name: torch.from_numpy(np.ascontiguousarray(a)).cuda() for name, a in feed_dict.items()}
        for name, t in bound.items():
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        logits = torch.empty(tuple(ctx.get_tensor_shape(LOGITS)), dtype=_torch_dtype(self.engine, LOGITS),
                             device="cuda")
        ctx.set_tensor_address(LOGITS, logits.data_ptr())
        caches = [(present_for(n), t) for n, t in bound.items() if present_for(n)]
        for present, t in caches:
            ctx.set_tensor_address(present, t.data_ptr())  # updated in place
        start = time.time()
        if not ctx.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed (see the TensorRT log above)")
        self.stream.synchronize()
        self.inference_time = time.time() - start
        end = int(feed_dict[WRITE_INDICES][0]) + feed_dict[INPUT_IDS].shape[1]
        out = OrderedDict([(LOGITS, logits.cpu().numpy())])
        out.update((present, t[:, :, :end].cpu().numpy()) for present, t in caches)
        return out

    def deactivate_impl(self):
        del self.context


def _torch_dtype(engine, name: str) -> torch.dtype:
    from polygraphy.datatype import DataType

    return DataType.to_dtype(DataType.from_dtype(engine.get_tensor_dtype(name), "tensorrt"), "torch")


def engine_dtypes(engine) -> dict[str, np.dtype]:
    """Every engine I/O tensor's numpy dtype, read from the engine (the authority: 8.6 makes int64 int32)."""
    from polygraphy.datatype import DataType

    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    return {n: np.dtype(DataType.to_dtype(DataType.from_dtype(engine.get_tensor_dtype(n), "tensorrt"), "numpy"))
            for n in names}

