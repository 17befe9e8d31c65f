"""ONNX Runtime runner: CPU or CUDA execution provider, I/O binding so the KV cache stays on the device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trtllm_kit.errors import MissingToolError
from trtllm_kit.export import read_export
from trtllm_kit.models.spec import ModelSpec
from trtllm_kit.runtime.base import Runner
from trtllm_kit.utils.dtypes import TORCH_DTYPES



class OrtRunner(Runner):
    """Runs ``model.onnx`` of an export directory.

    The KV cache lives in two preallocated flat device buffers per cache tensor, ping-ponged: each
    step binds a contiguous (B, kv_heads, past, head_dim) view of one as ``past_key_values`` and a
    (B, kv_heads, past + new, head_dim) view of the other as ``present``. Logits go into a torch buffer.
    Nothing crosses to the host between steps, and ONNX Runtime's arena never has to hold a growing
    cache (letting it allocate presents fragments its arena step after step until it runs out).
    """

    name = "ort"

    def __init__(self, onnx_dir: str | Path, device="cpu", threads: int | None = None):
        super().__init__(device)
        self.onnx_dir = Path(onnx_dir)
        self.meta = read_export(self.onnx_dir)
        self.spec = ModelSpec.from_dict(self.meta["spec"])
        self.dtype = self.meta["dtype"]
        self.threads = threads

    @property
    def impl(self) -> str:
        return f"onnxruntime {self.provider}"

    def activate_impl(self):
        import onnxruntime as ort

        self.ort = ort
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise MissingToolError("ONNX Runtime with CUDA", "pip install 'trtllm-kit[gpu]' (onnxruntime-gpu)")
            if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN libraries from the nvidia-* wheels torch uses
                ort.preload_dlls()
            # ONNX Runtime works on torch's stream, so its kernels are ordered after the torch ops that
            # wrote the inputs (argmax, mask) and the timer's CUDA events bracket them exactly.
            stream = torch.cuda.current_stream(self.device).cuda_stream
            providers = [("CUDAExecutionProvider", {"device_id": self.device.index or 0,
                                                    "has_user_compute_stream": "1",
                                                    "arena_extend_strategy": "kSameAsRequested",
                                                    "user_compute_stream": str(stream)})]
            self.ort_device = ("cuda", self.device.index or 0)
        else:
            providers = ["CPUExecutionProvider"]
            self.ort_device = ("cpu", 0)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(str(self.onnx_dir / "model.onnx"), opts, providers=providers)
        self.provider = self.session.get_providers()[0]
        if self.device.type == "cuda" and self.provider != "CUDAExecutionProvider":
            raise MissingToolError("A working ONNX Runtime CUDA provider", "check onnxruntime-gpu matches your CUDA")
        self.output_names = [o.name for o in self.session.get_outputs()]

    def deactivate_impl(self):
        del self.session
        self.kv, self.kv_key = None, None

    def reset(self, batch, max_len):
        key = (batch, max_len)
        if getattr(self, "kv_key", None) != key:
            self.kv = None  # free the old buffers before allocating new ones
            dt = TORCH_DTYPES[self.dtype]
            self.kv = {i: [torch.empty(batch * layer.n_kv_heads * max_len * layer.head_dim * 2, dtype=dt,
                                       device=self.device) for _ in range(2)]
                       for i, layer in enumerate(self.spec.layers)}
            self.kv_key = key
        self.flip, self.past_len = 0, 0

    def _bind_torch(self, binding, name: str, t: torch.Tensor, output: bool = False):
        np_dt = {torch.int64: np.int64, torch.float16: np.float16, torch.float32: np.float32}[t.dtype]
        fn = binding.bind_output if output else binding.bind_input
        fn(name, self.ort_device[0], self.ort_device[1], np_dt, list(t.shape), t.data_ptr())

    def _step(self, input_ids, position_ids, attention_mask) -> torch.Tensor:
        B, S = input_ids.shape
        binding = self.session.io_binding()
        ids, pos, mask = (x.to(torch.int64).contiguous() for x in (input_ids, position_ids, attention_mask))
        self._bind_torch(binding, "input_ids", ids)
        self._bind_torch(binding, "position_ids", pos)
        self._bind_torch(binding, "attention_mask", mask)
        P = self.past_len
        for i, layer in enumerate(self.spec.layers):
            src, dst = self.kv[i][self.flip], self.kv[i][1 - self.flip]
            n_past, n_present = B * layer.n_kv_heads * P * layer.head_dim, B * layer.n_kv_heads * (P + S) * layer.head_dim
            for k, kv in enumerate(("key", "value")):  # key in the first half of each buffer, value in the second
                half = src.numel() // 2
                past = src[k * half:k * half + n_past].view(B, layer.n_kv_heads, P, layer.head_dim)
                present = dst[k * half:k * half + n_present].view(B, layer.n_kv_heads, P + S, layer.head_dim)
                self._bind_torch(binding, f"past_key_values.{i}.{kv}", past)
                self._bind_torch(binding, f"present.{i}.{kv}", present, output=True)
        n_logits = 1 if self.meta["last_only_logits"] else S
        logits = torch.empty(B, n_logits, self.spec.vocab_size, dtype=TORCH_DTYPES[self.dtype], device=self.device)
        self._bind_torch(binding, "logits", logits, output=True)
        if self.device.type == "cuda":
            binding.synchronize_inputs()
        self.session.run_with_iobinding(binding)
        self.flip, self.past_len = 1 - self.flip, P + S
        return logits[:, -1]

    def prefill_impl(self, input_ids, position_ids, attention_mask):
        return self._step(input_ids, position_ids, attention_mask)

    def decode_impl(self, input_ids, position_ids, attention_mask, past_len):
        return self._step(input_ids, position_ids, attention_mask)
