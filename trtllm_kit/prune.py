"""Depth pruning: remove whole decoder blocks and write a Hugging Face checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from trtllm_kit.errors import ToolkitError
from trtllm_kit.models import load_model
from trtllm_kit.models.spec import ModelSpec
from trtllm_kit.models.weights import WeightSource, tensor_shapes
from trtllm_kit.utils.dtypes import TORCH_DTYPES



class RenumberedWeights(WeightSource):
    """The source's tensors with kept block ``keep[i]`` renamed to block ``i``."""

    def __init__(self, source: WeightSource, spec: ModelSpec, keep: list[int]):
        self.source, self.spec, self.keep = source, spec, keep

    def get(self, name: str) -> torch.Tensor:
        if name.startswith("model.layers."):
            idx, rest = name[len("model.layers."):].split(".", 1)
            name = f"model.layers.{self.keep[int(idx)]}.{rest}"
        return self.source.get(name)

    def describe(self) -> dict:
        return {**self.source.describe(), "kept_blocks": self.keep}


def depth_prune(model: str, drop: list[int], out: str | Path, dtype: str = "fp16", force: bool = False) -> ModelSpec:
    """Remove blocks ``drop`` from ``model`` and save the result as a checkpoint in ``out``.

    Returns:
        The pruned spec (``source_layers`` records where each kept block came from).
    """
    from trtllm_kit.models.checkpoint import save_checkpoint
    from trtllm_kit.utils.fs import check_output_dir
    from trtllm_kit.utils.progress import progress_bar

    check_output_dir(out, force, kind="checkpoint")
    spec, weights = load_model(model)
    bad = [i for i in drop if not 0 <= i < spec.num_layers]
    if bad:
        raise ToolkitError(f"--drop-blocks {bad} out of range: {spec.name} has blocks 0..{spec.num_layers - 1}")
    if len(set(drop)) >= spec.num_layers:
        raise ToolkitError("--drop-blocks would remove every block")
    keep = [i for i in range(spec.num_layers) if i not in set(drop)]
    pruned = spec.with_layers(keep, name=f"{spec.name}-drop{len(set(drop))}")
    renamed = RenumberedWeights(weights, pruned, keep)

    with progress_bar(total=len(tensor_shapes(pruned)), desc="prune", unit="tensor") as bar:
        save_checkpoint(pruned, renamed, out, dtype=TORCH_DTYPES[dtype], force=force, progress=lambda _: bar.update(1))
    return pruned
