"""The backends a benchmark can time, one registry entry each.

An entry states what the backend needs (weights, an ONNX export, an engine), whether it needs CUDA,
and how to make its runner; the sweep, the pipeline and the report read these facts from here.
A new backend is one ``register_backend`` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from trtllm_kit.errors import ToolkitError

NO_GPU = "no GPU to run it"


@dataclass(frozen=True)
class RunOptions:
    """How runners are made for one sweep: device (``cpu``/``cuda[:N]``), dtype, CUDA-graph decode."""

    device: str
    dtype: str
    cuda_graph: bool = False


@dataclass(frozen=True)
class Backend:
    """A registry entry.

    Attributes:
        name: as given to ``--backends``.
        description: one line for help texts and the report.
        needs: what the model must have: ``weights``, ``onnx``, ``engine``.
        needs_cuda: refuses the CPU.
        make: builds the runner from the model's artifacts and the run options.
        unsupported: why a (dtype, device) combination cannot run, or None.
    """

    name: str
    description: str
    needs: tuple[str, ...]
    needs_cuda: bool
    make: Callable
    unsupported: Callable[[str, str], str | None] = lambda dtype, device: None

    def check(self, dtype: str, device: str) -> str | None:
        """Why this backend cannot run at all with this dtype on this device (None: it can)."""
        if self.needs_cuda and not device.startswith("cuda"):
            return NO_GPU
        return self.unsupported(dtype, device)


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ToolkitError(f"unknown backend {name!r}", f"choose from {', '.join(BACKENDS)}")
    return BACKENDS[name]


def parse_backends(text: str | list[str]) -> list[str]:
    """Backend names from ``eager,ort`` or a list, validated, in registry order (eager first: the reference).

    Raises:
        ToolkitError: an unknown or empty list.
    """
    names = [b.strip() for b in (text.split(",") if isinstance(text, str) else text) if str(b).strip()]
    if not names:
        raise ToolkitError("no backend given", f"choose from {', '.join(BACKENDS)}")
    for n in names:
        get_backend(n)
    order = list(BACKENDS)
    return sorted(dict.fromkeys(names), key=order.index)


def _eager(art, opts: RunOptions):
    from trtllm_kit.runtime.eager import eager_runner

    return eager_runner(art.spec, art.weights(), opts.dtype, opts.device)


def _ort(art, opts: RunOptions):
    from trtllm_kit.runtime.ort import OrtRunner

    return OrtRunner.from_export(art.onnx_dir, opts.device)


def _trt(art, opts: RunOptions):
    from trtllm_kit.runtime.trt import TrtRunner

    return TrtRunner(art.engine_dir, opts.device, cuda_graph=opts.cuda_graph)


def _compiled(art, opts: RunOptions):
    from trtllm_kit.runtime.compiled import compiled_runner

    return compiled_runner(art.spec, art.weights(), opts.dtype, opts.device)


def _compiled_unsupported(dtype: str, device: str) -> str | None:
    from trtllm_kit.runtime.compiled import compile_unavailable

    return compile_unavailable(device)


def _ort_unsupported(dtype: str, device: str) -> str | None:
    if dtype == "bf16" and not device.startswith("cuda"):
        return "ONNX Runtime has no bf16 kernels on the CPU (use --dtype fp16 or fp32, or a GPU)"
    return None


register_backend(Backend("eager", "PyTorch eager (transformers generate; the reference module for width-pruned "
                         "models)", ("weights",), False, _eager))
register_backend(Backend("ort", "ONNX Runtime (CPU or CUDA execution provider, I/O binding)", ("onnx",), False, _ort,
                         _ort_unsupported))
register_backend(Backend("trt", "TensorRT / TensorRT-RTX engine", ("engine",), True, _trt))
register_backend(Backend("compiled", "torch.compile on a static KV cache (transformers generate with its compiled decode; "
                         "the reference module for width-pruned models); CUDA graphs on GPUs", ("weights",), False,
                         _compiled, _compiled_unsupported))
