"""Model specs, presets, checkpoint loading and the PyTorch reference."""

from __future__ import annotations

from pathlib import Path

from trtllm_kit.errors import ToolkitError
from trtllm_kit.models.spec import LayerSpec, ModelSpec
from trtllm_kit.models.weights import WeightSource


def load_model(ref: str, seed: int | None = None) -> tuple[ModelSpec, WeightSource]:
    """Resolve a preset name or a checkpoint directory into a spec and a lazy weight source.

    Args:
        ref: a name from ``trtllm-kit models`` or a local Hugging Face LLaMA checkpoint directory.
        seed: override the preset's weight seed.
    """
    from trtllm_kit.models.presets import PRESETS
    from trtllm_kit.models.weights import SeededWeights

    if ref in PRESETS:
        preset = PRESETS[ref]
        spec = preset.spec()
        return spec, SeededWeights(spec, preset.seed if seed is None else seed)
    path = Path(ref)
    if not path.exists():
        raise ToolkitError(f"model {ref!r} is neither a preset nor an existing path",
                           "see `trtllm-kit models` for presets, or give a checkpoint directory")
    from trtllm_kit.models.checkpoint import spec_from_checkpoint

    return spec_from_checkpoint(path)


__all__ = ["LayerSpec", "ModelSpec", "WeightSource", "load_model"]
