"""Where weights come from: seeded random presets or a checkpoint on disk, one tensor at a time.

Both sources hand out tensors lazily by their Hugging Face name, so the exporter and the pruner can
stream a 13B model through memory one matrix at a time.
"""

from __future__ import annotations

import contextlib
import json
import math
import zlib
from pathlib import Path
from typing import Iterator

import torch

from trtllm_kit.errors import ShapeError, ToolkitError
from trtllm_kit.models.spec import ModelSpec


def layer_tensor_shapes(spec: ModelSpec, i: int) -> dict[str, tuple[int, ...]]:
    """Names (HF convention) and shapes ([out, in] for linears) of decoder block ``i``."""
    L, H = spec.layers[i], spec.hidden_size
    p = f"model.layers.{i}."
    shapes = {
        p + "input_layernorm.weight": (H,),
        p + "self_attn.q_proj.weight": (L.q_dim, H),
        p + "self_attn.k_proj.weight": (L.kv_dim, H),
        p + "self_attn.v_proj.weight": (L.kv_dim, H),
        p + "self_attn.o_proj.weight": (H, L.q_dim),
        p + "post_attention_layernorm.weight": (H,),
        p + "mlp.gate_proj.weight": (L.mlp_dim, H),
        p + "mlp.up_proj.weight": (L.mlp_dim, H),
        p + "mlp.down_proj.weight": (H, L.mlp_dim),
    }
    if L.qkv_bias:
        shapes |= {p + "self_attn.q_proj.bias": (L.q_dim,), p + "self_attn.k_proj.bias": (L.kv_dim,),
                   p + "self_attn.v_proj.bias": (L.kv_dim,)}
    if L.o_bias:
        shapes[p + "self_attn.o_proj.bias"] = (H,)
    if L.gate_up_bias:
        shapes |= {p + "mlp.gate_proj.bias": (L.mlp_dim,), p + "mlp.up_proj.bias": (L.mlp_dim,)}
    if L.down_bias:
        shapes[p + "mlp.down_proj.bias"] = (H,)
    return shapes


def tensor_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every tensor of the model, in file order, by HF name."""
    shapes = {"model.embed_tokens.weight": (spec.vocab_size, spec.hidden_size)}
    for i in range(spec.num_layers):
        shapes |= layer_tensor_shapes(spec, i)
    shapes["model.norm.weight"] = (spec.hidden_size,)
    if not spec.tie_word_embeddings:
        shapes["lm_head.weight"] = (spec.vocab_size, spec.hidden_size)
    return shapes


class WeightSource:
    """Lazy access to a model's tensors by HF name (float32 or the checkpoint's dtype)."""

    spec: ModelSpec

    def get(self, name: str) -> torch.Tensor:
        raise NotImplementedError

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name in tensor_shapes(self.spec):
            yield name, self.get(name)

    def state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """All tensors at once; only for models that fit in memory comfortably."""
        return {name: t.to(dtype) for name, t in self.items()}

    def describe(self) -> dict:
        raise NotImplementedError


class SeededWeights(WeightSource):
    """Deterministic random weights: each tensor has its own seed from the model seed and its name.

    A depth-pruned preset keeps its blocks' original names for seeding (``spec.source_layers``), so
    its weights are exactly the dense model's with blocks removed.
    """

    def __init__(self, spec: ModelSpec, seed: int = 0):
        self.spec, self.seed = spec, seed
        self._shapes = tensor_shapes(spec)
        self._src = spec.source_layers or tuple(range(spec.num_layers))

    def get(self, name: str) -> torch.Tensor:
        shape = self._shapes[name]
        seed_name = name
        if name.startswith("model.layers."):
            idx, rest = name[len("model.layers."):].split(".", 1)
            seed_name = f"model.layers.{self._src[int(idx)]}.{rest}"
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + zlib.crc32(seed_name.encode())) % (1 << 62))
        t = torch.randn(shape, generator=g)
        if name.endswith("norm.weight"):
            return t.mul_(0.1).add_(1.0)
        if name.endswith(".bias"):
            return t.mul_(0.02)
        if name == "model.embed_tokens.weight":
            return t
        std = 1.0 / math.sqrt(shape[1])
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            std *= 0.2  # keep the residual stream tame in deep models (independent of depth, see source_layers)
        return t.mul_(std)

    def describe(self) -> dict:
        return {"kind": "seeded-random", "seed": self.seed}


class CheckpointWeights(WeightSource):
    """Tensors of a local Hugging Face checkpoint: safetensors preferred, ``.bin`` with weights_only."""

    def __init__(self, path: str | Path, spec: ModelSpec | None = None):
        self.path = Path(path)
        self.files = checkpoint_files(self.path)
        self._index: dict[str, Path] = {}
        self._bin_cache: tuple[Path, dict] | None = None
        for f in self.files:
            for name in self._names_in(f):
                if name in self._index:
                    raise ToolkitError(f"{self.path}: tensor {name} is in both {self._index[name].name} and {f.name}",
                                       "remove the stale file (or add a model.safetensors.index.json naming the shards)")
                self._index[name] = f
        self.spec = spec  # set by the loader once shapes are read

    @property
    def names(self) -> list[str]:
        return list(self._index)

    def _names_in(self, f: Path) -> list[str]:
        if f.suffix == ".safetensors":
            with _safetensors(f) as sf:
                return list(sf.keys())
        return list(self._load_bin(f))

    def _load_bin(self, f: Path) -> dict:
        if self._bin_cache is None or self._bin_cache[0] != f:
            try:
                sd = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise ToolkitError(f"cannot read {f}: {str(e).splitlines()[0][:200]}",
                                       "the file is corrupt or not a PyTorch state dict") from None
                sd = _load_unmapped(f)  # the legacy (pre-zip) format cannot be memory-mapped
            except Exception as e:  # noqa: BLE001 - a pickle with code in it, or a corrupt file
                raise ToolkitError(f"cannot read {f} safely: {str(e).splitlines()[0][:200]}",
                                   "only plain tensor state dicts are loaded (weights_only=True)") from None
            if not isinstance(sd, dict):
                raise ToolkitError(f"{f} holds a {type(sd).__name__}, not a state dict of tensors")
            bad = next((k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
            if bad is not None:
                raise ToolkitError(f"{f}: entry {bad!r} is a {type(sd[bad]).__name__}, not a tensor",
                                   "save the model's state_dict() itself (torch.save(model.state_dict(), ...))")
            self._bin_cache = (f, sd)
        return self._bin_cache[1]

    def shape(self, name: str) -> tuple[int, ...] | None:
        f = self._index.get(name)
        if f is None:
            return None
        if f.suffix == ".safetensors":
            with _safetensors(f) as sf:
                return tuple(sf.get_slice(name).get_shape())
        return tuple(self._load_bin(f)[name].shape)

    def get(self, name: str) -> torch.Tensor:
        f = self._index.get(name)
        if f is None:
            raise ShapeError(f"{self.path}: tensor {name} is missing from the checkpoint")
        if f.suffix == ".safetensors":
            with _safetensors(f) as sf:
                return _read(f, name, sf.get_tensor)
        return self._load_bin(f)[name]

    def describe(self) -> dict:
        return {"kind": "checkpoint", "path": str(self.path.absolute()),
                "files": {p.name: [p.stat().st_size, int(p.stat().st_mtime)] for p in self.files}}


@contextlib.contextmanager
def _safetensors(f: Path):
    """``safe_open`` with a corrupt or truncated file reported as one clear error."""
    from safetensors import safe_open

    try:
        handle = safe_open(f, framework="pt")
    except Exception as e:  # noqa: BLE001 - SafetensorError and OSError alike
        raise ToolkitError(f"cannot read {f}: {str(e).splitlines()[0][:200]}",
                           "the file is truncated or corrupt; download or save it again") from None
    with handle as sf:
        yield sf


def _read(f: Path, name: str, get):
    try:
        return get(name)
    except Exception as e:  # noqa: BLE001 - a tensor whose bytes lie past the end of a truncated file
        raise ToolkitError(f"cannot read tensor {name} from {f}: {str(e).splitlines()[0][:200]}",
                           "the file is truncated or corrupt; download or save it again") from None


def _load_unmapped(f: Path) -> dict:
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ToolkitError(f"cannot read {f} safely: {str(e).splitlines()[0][:200]}",
                           "only plain tensor state dicts are loaded (weights_only=True)") from None


def checkpoint_files(path: Path) -> list[Path]:
    """The weight files of a checkpoint directory, safetensors first."""
    for pattern, index in (("*.safetensors", "model.safetensors.index.json"),
                           ("pytorch_model*.bin", "pytorch_model.bin.index.json")):
        idx = path / index
        if idx.is_file():
            try:
                weight_map = json.loads(idx.read_text())["weight_map"]
                files = sorted({path / f for f in weight_map.values()})
            except (ValueError, KeyError, TypeError, AttributeError):
                raise ToolkitError(f"{idx} is not a valid shard index (a 'weight_map' of tensor -> file)") from None
            root = path.resolve()
            if any(root not in f.resolve().parents for f in files):
                raise ToolkitError(f"{idx} names shard files outside {path}")
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise ToolkitError(f"{path}: {index} names missing shard(s): {', '.join(missing)}")
            return files
        files = sorted(path.glob(pattern))
        if files:
            return files
    raise ToolkitError(f"{path}: no weights found", "expected model*.safetensors or pytorch_model*.bin")
