"""Polygraphy, imported lazily, and the few places where its API differs between 0.49 and 0.53.

Everything else in ``trtllm_kit.check`` calls ``require_polygraphy()`` before importing Polygraphy, so
the CPU install works without it and a missing Polygraphy is one line saying what to install.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from trtllm_kit.errors import MissingToolError

INSTALL = "pip install 'trtllm-kit[check]'"


def require_polygraphy(module: str = "polygraphy") -> ModuleType:
    """Import Polygraphy (or one of its modules), or say in one line what to install.

    Args:
        module: the module to import.

    Raises:
        MissingToolError: the module cannot be imported.
    """
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise MissingToolError("Polygraphy", INSTALL) from None
    from polygraphy.logger import G_LOGGER

    G_LOGGER.colors = False  # plain text in pipes and logs (and no warning about the 'colored' module)
    return mod


def simple_compare_func(rtol: float, atol: float):
    """Polygraphy's elementwise comparison: an element passes when |a - b| <= atol or |a - b| / |b| <= rtol.

    0.53 has ``SimpleCompareFunc`` (``CompareFunc.simple`` is deprecated there); 0.49 only the latter.
    """
    from polygraphy import comparator

    cls = getattr(comparator, "SimpleCompareFunc", None)
    if cls is not None:
        return cls(rtol=rtol, atol=atol)
    return comparator.CompareFunc.simple(rtol=rtol, atol=atol)


def output_results(accuracy) -> dict[str, object]:
    """Per-output comparison results of the first runner pair and first iteration of one comparison.

    ``Comparator.compare_accuracy`` returns an ``AccuracyResult`` (0.49) or a list of them,
    ``AccuracyResults`` (0.53); each maps a runner pair to a list of per-iteration
    ``{output name: OutputCompareResult or bool}``. A bool is a shape mismatch (always a failure).
    """
    first = accuracy if hasattr(accuracy, "items") else next(iter(accuracy))
    iterations = next(iter(first.values()))
    return dict(iterations[0]) if iterations else {}


def expose_cuda_runtime() -> None:
    """Let Polygraphy find the CUDA runtime torch already loaded (pip wheels keep it off the loader path).

    Polygraphy's CUDA wrapper looks for ``libcudart.so*`` in ``LD_LIBRARY_PATH`` and the toolkit's usual
    directories; the directory of the copy this process uses goes first on that list.
    """
    import torch

    if not torch.cuda.is_available():
        return
    torch.cuda.init()
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return
    dirs = {str(Path(line.split()[-1]).parent) for line in maps if "/libcudart.so" in line}
    if dirs:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([*sorted(dirs), os.environ.get("LD_LIBRARY_PATH", "")])
