"""TensorRT flavours (full TensorRT 8.6/10.x/11.x, TensorRT-RTX 1.x) and the GPU they would run on.

Everything version-dependent lives here, stated as capabilities, so the builder and the runner never
branch on version strings themselves.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
from dataclasses import dataclass
from types import ModuleType

from trtllm_kit.errors import MissingToolError, ToolkitError

FLAVORS = ("tensorrt", "tensorrt-rtx")
INSTALL = {"tensorrt": "pip install 'trtllm-kit[tensorrt]'", "tensorrt-rtx": "pip install 'trtllm-kit[rtx]'"}
MODULES = {"tensorrt": ("tensorrt",), "tensorrt-rtx": ("tensorrt_rtx", "tensorrt_rtx_bindings")}


@dataclass(frozen=True)
class GpuInfo:
    """A CUDA GPU: its name and compute capability (major, minor)."""

    name: str
    compute_capability: tuple[int, int]

    @property
    def cc(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


@dataclass(frozen=True)
class Flavor:
    """One importable TensorRT library and what it can do."""

    name: str
    trt: ModuleType
    version: str

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.version.split(".")[:3] if p.isdigit())

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt-rtx"

    @property
    def strongly_typed(self) -> bool:
        """Types come from the ONNX graph (TensorRT >= 9, RTX); 8.6 uses the FP16 builder flag instead."""
        return self.is_rtx or hasattr(self.trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")

    @property
    def needs_explicit_batch_flag(self) -> bool:
        return not self.is_rtx and self.version_tuple < (10,)

    @property
    def inplace_kv(self) -> bool:
        """Native KV-cache update layers: TensorRT >= 10.15 and TensorRT-RTX."""
        return hasattr(self.trt.INetworkDefinition, "add_kv_cache_update") and (
            self.is_rtx or self.version_tuple >= (10, 15))

    @property
    def progress_monitor(self) -> bool:
        return hasattr(self.trt, "IProgressMonitor")

    @property
    def plugin_v2(self) -> bool:
        """Loads C++ ``IPluginV2DynamicExt`` plugins (TensorRT 8.6 to 10.x; not TensorRT-RTX)."""
        return not self.is_rtx and hasattr(self.trt.INetworkDefinition, "add_plugin_v2")

    @property
    def max_onnx_opset(self) -> int | None:
        """The newest ONNX opset the parser reads, where it is older than the exporter's (8.x: 17)."""
        return 17 if not self.is_rtx and self.version_tuple < (9,) else None

    def runs_on(self, gpu: GpuInfo) -> bool:
        if not self.is_rtx:
            return gpu.compute_capability >= (7, 5) or self.version_tuple < (10,)
        major, minor = gpu.compute_capability
        return (major, minor) in {(8, 0), (8, 6), (8, 9)} or major == 12


def load_flavor(name: str) -> Flavor:
    """Import a flavour's Python module, or say in one sentence what to install."""
    if name not in FLAVORS:
        raise ToolkitError(f"unknown TensorRT flavor {name!r}", f"choose auto, {' or '.join(FLAVORS)}")
    for mod in MODULES[name]:
        try:
            trt = importlib.import_module(mod)
            return Flavor(name, trt, getattr(trt, "__version__", "0"))
        except Exception:  # noqa: BLE001 - PyPI stubs raise at import when the real wheel is missing
            continue
    raise MissingToolError("TensorRT-RTX" if name == "tensorrt-rtx" else "TensorRT", INSTALL[name])


def detect_gpu() -> GpuInfo | None:
    """The first CUDA GPU, through torch if it sees one, else nvidia-smi; None without a GPU."""
    try:
        import torch

        if torch.cuda.is_available():
            return GpuInfo(torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
    except Exception:  # noqa: BLE001
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
            if out:
                name, cap = (s.strip() for s in out[0].rsplit(",", 1))
                major, minor = cap.split(".")
                return GpuInfo(name, (int(major), int(minor)))
        except Exception:  # noqa: BLE001
            pass
    return None


def resolve_flavor(requested: str, gpu: GpuInfo | None, purpose: str = "build") -> Flavor:
    """Pick and check a flavour before any work: ``auto`` prefers full TensorRT, else TensorRT-RTX.

    Raises:
        ToolkitError: the flavour cannot run on the detected GPU (RTX on Hopper, say), or full
            TensorRT is asked to build without a GPU.
    """
    if requested == "auto":
        try:
            flavor = load_flavor("tensorrt")
            if gpu is None:  # full TensorRT cannot build without a GPU; RTX can
                flavor = load_flavor("tensorrt-rtx")
        except MissingToolError:
            try:
                flavor = load_flavor("tensorrt-rtx")
            except MissingToolError:
                raise ToolkitError("no TensorRT is installed (neither TensorRT nor TensorRT-RTX)",
                                   f"install one: {INSTALL['tensorrt']} (GPU) or {INSTALL['tensorrt-rtx']}") from None
    else:
        flavor = load_flavor(requested)
    if gpu is not None and not flavor.runs_on(gpu):
        hint = ("TensorRT-RTX runs on compute capability 8.0, 8.6, 8.9 and 12.x only; use --flavor tensorrt "
                f"({INSTALL['tensorrt']})") if flavor.is_rtx else "use a newer GPU or an older TensorRT"
        raise ToolkitError(f"{flavor.name} {flavor.version} cannot {purpose} for {gpu.name} (compute capability "
                           f"{gpu.cc})", hint)
    if gpu is None and not flavor.is_rtx:
        raise ToolkitError(f"full TensorRT needs a CUDA GPU to {purpose}, and none was found",
                           "use --flavor tensorrt-rtx, which builds portable engines without a GPU")
    return flavor
