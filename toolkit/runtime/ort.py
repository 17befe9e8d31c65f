"""ONNX Runtime runner: CPU or CUDA execution provider, I/O binding so the KV cache stays on the device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from toolkit.errors import MissingToolError
from toolkit.export import read_export
from toolkit.models.spec import ModelSpec
from toolkit.runtime.base import Runner

NP_DTYPES = {"fp16": np.float16, "fp32": np.float32, "bf16": np.float32}
TORCH_DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}


class OrtRunner(Runner):
    """Runs ``model.onnx`` of an export directory.

    Presents come back as device OrtValues and are bound as the next step's past inputs, and logits
    are written into a torch buffer on the device, so nothing crosses to the host between steps.
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
        self.past = None

    def reset(self, batch, max_len):
        np_dt = NP_DTYPES[self.dtype]
        self.past = {f"past_key_values.{i}.{kv}": self.ort.OrtValue.ortvalue_from_shape_and_type(
            [batch, layer.n_kv_heads, 0, layer.head_dim], np_dt, *self.ort_device)
            for i, layer in enumerate(self.spec.layers) for kv in ("key", "value")}

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
        for name, value in self.past.items():
            binding.bind_ortvalue_input(name, value)
        n_logits = 1 if self.meta["last_only_logits"] else S
        logits = torch.empty(B, n_logits, self.spec.vocab_size, dtype=TORCH_DTYPES[self.dtype], device=self.device)
        self._bind_torch(binding, "logits", logits, output=True)
        for name in self.output_names[1:]:
            binding.bind_output(name, self.ort_device[0], self.ort_device[1])
        self.session.run_with_iobinding(binding)
        outs = binding.get_outputs()
        self.past = {name.replace("present.", "past_key_values."): outs[k]
                     for k, name in enumerate(self.output_names) if k}
        return logits[:, -1]

    def prefill_impl(self, input_ids, position_ids, attention_mask):
        return self._step(input_ids, position_ids, attention_mask)

    def decode_impl(self, input_ids, position_ids, attention_mask, past_len):
        return self._step(input_ids, position_ids, attention_mask)
