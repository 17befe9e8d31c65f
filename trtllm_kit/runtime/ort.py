"""ONNX Runtime runner: CPU or CUDA execution provider, I/O binding so the KV cache stays on the device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trtllm_kit.errors import MissingToolError, ToolkitError
from trtllm_kit.export.io_spec import ATTENTION_MASK, INPUT_IDS, LOGITS, POSITION_IDS
from trtllm_kit.models.spec import ModelSpec
from trtllm_kit.runtime.base import Runner
from trtllm_kit.runtime.kv_cache import PingPongCache
from trtllm_kit.utils.dtypes import TORCH_DTYPES

NP_OF_TORCH = {torch.int64: np.int64, torch.float16: np.float16, torch.float32: np.float32}


class OrtRunner(Runner):
    """Runs an exported ``model.onnx``.

    The KV cache lives in a ``PingPongCache`` bound by pointer: nothing crosses to the host between
    steps, and ONNX Runtime's arena never has to hold a growing cache (letting it allocate presents
    fragments its arena step after step until it runs out). Logits go into a torch buffer.

    Args:
        onnx_path: the graph. spec, dtype, last_only: what the export says of it.
        device: ``cpu`` or ``cuda[:N]``. threads: intra-op threads on the CPU (None: ONNX Runtime's default).
    """

    name = "ort"

    def __init__(self, onnx_path: str | Path, spec: ModelSpec, dtype: str, last_only: bool, device="cpu",
                 threads: int | None = None):
        super().__init__(device)
        self.onnx_path, self.spec, self.dtype, self.last_only = Path(onnx_path), spec, dtype, last_only
        self.threads = threads
        self.cache = None
        self.impl = "onnxruntime"

    @classmethod
    def from_export(cls, onnx_dir: str | Path, device="cpu", threads: int | None = None) -> "OrtRunner":
        from trtllm_kit.export.manifest import ExportManifest

        m = ExportManifest.load(onnx_dir)
        m.verify_onnx(onnx_dir)
        return cls(Path(onnx_dir) / "model.onnx", m.spec, m.dtype, m.last_only_logits, device, threads)

    def check_point(self, batch, prompt_len, new_tokens):
        check_positions(self.spec, prompt_len + new_tokens)

    def activate_impl(self):
        import onnxruntime as ort

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
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), opts, providers=providers)
        except Exception as e:  # noqa: BLE001 - e.g. no bf16 kernels on the CPU
            raise ToolkitError(f"ONNX Runtime cannot load {self.onnx_path} on {self.device.type}: "
                               f"{str(e).splitlines()[0][:200]}") from None
        provider = self.session.get_providers()[0]
        if self.device.type == "cuda" and provider != "CUDAExecutionProvider":
            raise MissingToolError("A working ONNX Runtime CUDA provider", "check onnxruntime-gpu matches your CUDA")
        self.impl = f"onnxruntime {provider}"

    def deactivate_impl(self):
        del self.session
        self.cache = None

    def reset(self, batch, max_len):
        dt = TORCH_DTYPES[self.dtype]
        if self.cache is None or not self.cache.fits(batch, max_len, dt):
            self.cache = None  # free the old buffers before allocating new ones
            self.cache = PingPongCache(self.spec, batch, max_len, dt, self.device)
        self.cache.restart()

    def _bind(self, binding, name: str, t: torch.Tensor, output: bool = False):
        fn = binding.bind_output if output else binding.bind_input
        fn(name, self.ort_device[0], self.ort_device[1], NP_OF_TORCH[t.dtype], list(t.shape), t.data_ptr())

    def _step(self, input_ids, position_ids, attention_mask) -> torch.Tensor:
        B, S = input_ids.shape
        binding = self.session.io_binding()
        feeds = [(n, x.to(torch.int64).contiguous()) for n, x in
                 ((INPUT_IDS, input_ids), (POSITION_IDS, position_ids), (ATTENTION_MASK, attention_mask))]
        for name, t in feeds:
            self._bind(binding, name, t)
        for view in self.cache.views(S):
            self._bind(binding, view.past_name, view.past)
            self._bind(binding, view.present_name, view.present, output=True)
        logits = torch.empty(B, 1 if self.last_only else S, self.spec.vocab_size, dtype=TORCH_DTYPES[self.dtype],
                             device=self.device)
        self._bind(binding, LOGITS, logits, output=True)
        if self.device.type == "cuda":
            binding.synchronize_inputs()
        self.session.run_with_iobinding(binding)
        self.cache.advance(S)
        return logits[:, -1]

    def prefill_impl(self, input_ids, position_ids, attention_mask):
        return self._step(input_ids, position_ids, attention_mask)

    def decode_impl(self, input_ids, position_ids, attention_mask, past_len):
        return self._step(input_ids, position_ids, attention_mask)


def check_positions(spec: ModelSpec, length: int) -> None:
    """The exported graph's rotary table covers positions < max_position_embeddings.

    Raises:
        ToolkitError: a generation that would run past it.
    """
    if length > spec.max_position_embeddings:
        raise ToolkitError(f"prompt + output length {length} exceeds the model's max_position_embeddings "
                           f"{spec.max_position_embeddings}", "use shorter prompts or outputs")
