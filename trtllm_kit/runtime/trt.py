"""TensorRT / TensorRT-RTX runner for engines built by ``trtllm-kit build``.

Device buffers come from torch; every I/O dtype and shape is read from the engine (TensorRT 8.6 turns
INT64 inputs into INT32). KV buffers are allocated once per generation and reused across steps:

- portable engines: two flat buffers per cache tensor, ping-ponged, each viewed as the contiguous
  (B, kv_heads, past, head_dim) the step needs: ``present`` of one step is ``past`` of the next;
- in-place engines: one static (B, kv_heads, max_seq, head_dim) cache per tensor bound to both the
  ``past_key_values`` input and the aliased ``present`` output; decode steps may replay a CUDA graph.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trtllm_kit.engine.builder import profile_for, read_engine_meta
from trtllm_kit.engine.flavors import detect_gpu, resolve_flavor
from trtllm_kit.errors import ToolkitError
from trtllm_kit.models.spec import ModelSpec
from trtllm_kit.runtime.base import Runner

TRT_TO_TORCH = {"float": torch.float32, "half": torch.float16, "bf16": torch.bfloat16, "int32": torch.int32,
                "int64": torch.int64, "bool": torch.bool, "int8": torch.int8}


class TrtRunner(Runner):
    """Runs ``model.engine`` of an engine directory on a CUDA GPU."""

    name = "trt"

    def __init__(self, engine_dir: str | Path, device="cuda", cuda_graph: bool = False,
                 allow_host_code: bool = False):
        super().__init__(device)
        self.engine_dir = Path(engine_dir)
        self.meta = read_engine_meta(self.engine_dir)
        self.spec = ModelSpec.from_dict(self.meta["spec"])
        self.inplace = self.meta["kv_mode"] == "inplace"
        self.cuda_graph = cuda_graph and self.inplace
        self.allow_host_code = allow_host_code
        self.impl = f"{self.meta['flavor']} {self.meta['trt_version']} ({self.meta['kv_mode']} KV)"

    def check_point(self, batch, prompt_len, new_tokens):
        profile_for(self.meta, batch, prompt_len, 0)
        profile_for(self.meta, batch, 1, prompt_len + new_tokens - 1)

    def activate_impl(self):
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise ToolkitError("TensorRT engines need a CUDA GPU to run, and none was found",
                               "run the trt backend on a GPU machine")
        flavor = resolve_flavor(self.meta["flavor"], detect_gpu(), purpose="run")
        if flavor.version != self.meta["trt_version"]:
            raise ToolkitError(f"engine was built with {self.meta['flavor']} {self.meta['trt_version']} but "
                               f"{flavor.version} is installed", "rebuild the engine with the installed version")
        trt = self.trt = flavor.trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        if hasattr(self.runtime, "engine_host_code_allowed"):
            self.runtime.engine_host_code_allowed = self.allow_host_code
        self.engine = self.runtime.deserialize_cuda_engine((self.engine_dir / "model.engine").read_bytes())
        if self.engine is None:
            raise ToolkitError(f"TensorRT could not load {self.engine_dir / 'model.engine'}",
                               "it may have been built for another GPU or TensorRT version; rebuild it")
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.dtypes = {n: TRT_TO_TORCH[str(self.engine.get_tensor_dtype(n)).split(".")[-1].lower()] for n in self.names}
        self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        # One execution context per profile, so prefill and decode never switch profiles mid-generation.
        self.contexts = []
        for k in range(self.engine.num_optimization_profiles):
            ctx = self.engine.create_execution_context()
            ctx.set_optimization_profile_async(k, torch.cuda.current_stream().cuda_stream)
            self.contexts.append(ctx)
        self.graphs: dict = {}

    def deactivate_impl(self):
        self.graphs.clear()
        self.buffers = None
        del self.contexts, self.engine, self.runtime

    # -- buffers ---------------------------------------------------------------------------
    def reset(self, batch, max_len):
        if max_len > self.meta["limits"]["max_seq"]:
            raise ToolkitError(f"{max_len} tokens exceed the engine's --max-seq {self.meta['limits']['max_seq']}")
        cap = self.meta["limits"]["max_seq"] if self.inplace else max_len
        key = (batch, cap)
        if getattr(self, "buffers", None) and self.buffers["key"] == key:
            if self.inplace:
                self.buffers["mask"].zero_()
            return
        self.graphs.clear()
        bufs = {"key": key, "kv": {}}
        for i, layer in enumerate(self.spec.layers):
            for kv in ("key", "value"):
                name = f"past_key_values.{i}.{kv}"
                n = batch * layer.n_kv_heads * cap * layer.head_dim
                count = 1 if self.inplace else 2
                bufs["kv"][name] = [torch.empty(n, dtype=self.dtypes[name], device=self.device) for _ in range(count)]
        bufs["logits"] = torch.empty(batch * self.spec.vocab_size * (1 if self.meta["last_only_logits"] else
                                                                      self.meta["limits"]["max_input"]),
                                     dtype=self.dtypes["logits"], device=self.device)
        if self.inplace:
            bufs["mask"] = torch.zeros(batch, cap, dtype=self.dtypes["attention_mask"], device=self.device)
            bufs["write"] = torch.zeros(batch, dtype=self.dtypes["write_indices"], device=self.device)
            bufs["ids"] = torch.zeros(batch, 1, dtype=self.dtypes["input_ids"], device=self.device)
            bufs["pos"] = torch.zeros(batch, 1, dtype=self.dtypes["position_ids"], device=self.device)
        self.buffers = bufs
        self.flip = 0

    # -- steps -----------------------------------------------------------------------------
    def _run(self, ctx, feeds: dict[str, torch.Tensor], past_len: int, new_len: int) -> torch.Tensor:
        B = next(iter(feeds.values())).shape[0]
        for name, t in feeds.items():
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        for i, layer in enumerate(self.spec.layers):
            for kv in ("key", "value"):
                name = f"past_key_values.{i}.{kv}"
                bufs = self.buffers["kv"][name]
                if self.inplace:
                    shape = (B, layer.n_kv_heads, self.meta["limits"]["max_seq"], layer.head_dim)
                    ctx.set_input_shape(name, shape)
                    ctx.set_tensor_address(name, bufs[0].data_ptr())
                    ctx.set_tensor_address(f"present.{i}.{kv}", bufs[0].data_ptr())
                else:
                    src, dst = bufs[self.flip], bufs[1 - self.flip]
                    ctx.set_input_shape(name, (B, layer.n_kv_heads, past_len, layer.head_dim))
                    ctx.set_tensor_address(name, src.data_ptr())
                    ctx.set_tensor_address(f"present.{i}.{kv}", dst.data_ptr())
        n_logits = 1 if self.meta["last_only_logits"] else new_len
        logits = self.buffers["logits"][:B * n_logits * self.spec.vocab_size].view(B, n_logits, self.spec.vocab_size)
        ctx.set_tensor_address("logits", logits.data_ptr())
        if not ctx.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise ToolkitError("TensorRT execution failed (see the TensorRT log above)")
        if not self.inplace:
            self.flip = 1 - self.flip
        return logits[:, -1]

    def _feeds(self, input_ids, position_ids, attention_mask, past_len):
        feeds = {"input_ids": input_ids.to(self.dtypes["input_ids"]).contiguous(),
                 "position_ids": position_ids.to(self.dtypes["position_ids"]).contiguous()}
        if self.inplace:
            B, S = input_ids.shape
            mask = self.buffers["mask"]
            mask[:, past_len:past_len + S] = attention_mask[:, past_len:past_len + S].to(mask.dtype)
            self.buffers["write"].fill_(past_len)
            feeds |= {"attention_mask": mask, "write_indices": self.buffers["write"]}
        else:
            feeds["attention_mask"] = attention_mask.to(self.dtypes["attention_mask"]).contiguous()
        return feeds

    def prefill_impl(self, input_ids, position_ids, attention_mask):
        B, S = input_ids.shape
        ctx = self.contexts[profile_for(self.meta, B, S, 0)]
        return self._run(ctx, self._feeds(input_ids, position_ids, attention_mask, 0), 0, S)

    def decode_impl(self, input_ids, position_ids, attention_mask, past_len):
        B = input_ids.shape[0]
        ctx = self.contexts[profile_for(self.meta, B, 1, past_len)]
        if not self.cuda_graph:
            return self._run(ctx, self._feeds(input_ids, position_ids, attention_mask, past_len), past_len, 1)
        # In-place decode has static shapes and addresses: capture once per batch size, then replay.
        bufs = self.buffers
        bufs["ids"].copy_(input_ids)
        bufs["pos"].copy_(position_ids)
        bufs["mask"][:, past_len] = 1
        bufs["write"].fill_(past_len)
        feeds = {"input_ids": bufs["ids"], "position_ids": bufs["pos"], "attention_mask": bufs["mask"],
                 "write_indices": bufs["write"]}
        if B not in self.graphs:
            self._run(ctx, feeds, past_len, 1)  # warm-up outside capture (TensorRT allocates lazily)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._run(ctx, feeds, past_len, 1)
            self.graphs[B] = (graph, out)
            bufs["write"].fill_(past_len)  # the capture ran nothing; the warm-up wrote the same slot
        graph, out = self.graphs[B]
        graph.replay()
        return out
