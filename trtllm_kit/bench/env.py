"""The environment block every results file carries."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from trtllm_kit import __version__


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists() or not shutil.which("git"):
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def environment() -> dict:
    import torch

    env = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "transformers": _version("transformers"),
        "toolkit": __version__, "git_commit": _git_commit(), "command": " ".join(sys.argv),
    }
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__  # the module imported, whichever distribution provides it
        env["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name(0)
        env["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        env["cuda"] = torch.version.cuda
        env["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1)
        if shutil.which("nvidia-smi"):
            try:
                env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                               capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
            except (OSError, subprocess.TimeoutExpired, IndexError):
                env["driver"] = None
    else:
        env["device"] = "CPU only"
    for name, mods in (("tensorrt", ("tensorrt",)), ("tensorrt-rtx", ("tensorrt_rtx", "tensorrt_rtx_bindings"))):
        for mod in mods:
            try:
                env[name] = importlib.import_module(mod).__version__
                break
            except Exception:  # noqa: BLE001 - not installed, or a stub
                continue
    knobs = {k: v for k, v in os.environ.items() if k.startswith("TRTLLM_KIT_")}
    if knobs:  # the A/B variables set (engines/README.md): what a result was measured with
        env["knobs"] = dict(sorted(knobs.items()))
    return env
