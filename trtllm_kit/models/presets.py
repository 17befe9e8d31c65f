"""Named model presets at the paper's shapes, with seeded random weights.

Each entry says only what differs from its dense base: which blocks a depth-pruned variant keeps, or
how wide each block of a width-pruned one is. Shapes follow ``shared/PAPER.md``; where the paper
publishes no per-block shapes (FLAP) a deterministic adaptive profile is generated and scaled to the
paper's parameter count.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Callable

from trtllm_kit.models.spec import LayerSpec, ModelSpec


@dataclass(frozen=True)
class PresetSpec:
    """A registry entry: a name, one line for ``trtllm-kit models``, and how to make the spec."""

    name: str
    description: str
    make: Callable[[], ModelSpec]
    seed: int = 0

    def spec(self) -> ModelSpec:
        return dataclasses.replace(self.make(), name=self.name).check()


PRESETS: dict[str, PresetSpec] = {}


def register(name: str, description: str, seed: int = 0):
    def deco(fn: Callable[[], ModelSpec]):
        PRESETS[name] = PresetSpec(name, description, fn, seed)
        return fn
    return deco


def dense(name: str, vocab: int, hidden: int, n_layers: int, heads: int, head_dim: int, mlp: int,
          kv_heads: int | None = None, max_pos: int = 2048) -> ModelSpec:
    layer = LayerSpec(n_heads=heads, n_kv_heads=kv_heads or heads, head_dim=head_dim, mlp_dim=mlp)
    return ModelSpec(name=name, vocab_size=vocab, hidden_size=hidden, layers=(layer,) * n_layers,
                     max_position_embeddings=max_pos)


def drop_blocks(spec: ModelSpec, drop: list[int] | range) -> ModelSpec:
    drop = set(drop)
    return spec.with_layers([i for i in range(spec.num_layers) if i not in drop])


def taylor_style_drop(n_layers: int, n_drop: int) -> range:
    """The blocks just before the last two, as the Taylor+ criterion removes on LLaMA-7B ({24..29})."""
    return range(n_layers - 2 - n_drop, n_layers - 2)


def llm_pruner(spec: ModelSpec, heads: int, mlp: int, first: int = 4, last: int = 2) -> ModelSpec:
    """Blocks ``first..L-last-1`` pruned uniformly to ``heads`` heads and ``mlp`` MLP width."""
    layers = list(spec.layers)
    for i in range(first, spec.num_layers - last):
        layers[i] = dataclasses.replace(layers[i], n_heads=heads, n_kv_heads=heads, mlp_dim=mlp)
    return dataclasses.replace(spec, layers=tuple(layers))


def flap(spec: ModelSpec, target_params: float, seed: int) -> ModelSpec:
    """An adaptive per-block width profile with ``o_proj``/``down_proj`` biases, scaled to the target.

    FLAP keeps more of the first and last blocks and prunes attention and MLP by different amounts in
    each block; the per-block numbers are not published, so they are drawn deterministically here.
    """
    base = spec.layers[0]
    rng = random.Random(seed)
    n = spec.num_layers
    # Keep more near both ends, less in the middle, jittered per block and per module.
    shape = [0.6 + 0.4 * abs(2 * i / (n - 1) - 1) ** 1.5 for i in range(n)]
    jit_a = [rng.uniform(0.8, 1.2) for _ in range(n)]
    jit_m = [rng.uniform(0.8, 1.2) for _ in range(n)]

    def make(scale: float) -> ModelSpec:
        layers = []
        for i in range(n):
            heads = max(1, min(base.n_heads, round(base.n_heads * min(1.0, scale * shape[i] * jit_a[i]))))
            mlp = max(8, min(base.mlp_dim, 8 * round(base.mlp_dim * min(1.0, scale * shape[i] * jit_m[i]) / 8)))
            layers.append(dataclasses.replace(base, n_heads=heads, n_kv_heads=heads, mlp_dim=mlp,
                                              o_bias=True, down_bias=True))
        return dataclasses.replace(spec, layers=tuple(layers))

    lo, hi = 0.05, 3.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if make(mid).param_count() < target_params else (lo, mid)
    return make(hi)


def _llama7b() -> ModelSpec:
    return dense("llama-7b", 32000, 4096, 32, 32, 128, 11008)


def _vicuna13b() -> ModelSpec:
    return dense("vicuna-13b", 32000, 5120, 40, 40, 128, 13824)


def _tiny() -> ModelSpec:
    return dense("tiny-llama", 320, 64, 6, 4, 16, 160, max_pos=2048)


def register_family(name: str, title: str, make: Callable[[], ModelSpec], depth: dict[int, int],
                    pruner: tuple[int, int, str], flap_target: float, flap_seed: int) -> None:
    """A dense base and its variants: depth-pruned (percent -> blocks dropped), LLM-Pruner, FLAP."""
    base = make()
    n = base.num_layers
    register(name, f"{title} shape: {n} blocks, hidden {base.hidden_size}, {base.layers[0].n_heads} heads x "
             f"{base.layers[0].head_dim}, MLP {base.layers[0].mlp_dim}")(make)
    for pct, n_drop in depth.items():
        drop = taylor_style_drop(n, n_drop)
        register(f"{name}-depth-{pct}", f"{title} depth-pruned {pct}%: {n - n_drop} blocks kept "
                 f"(blocks {drop.start}..{drop.stop - 1} removed)")(lambda d=drop: drop_blocks(make(), d))
    heads, mlp, size = pruner
    register(f"{name}-llmpruner", f"{title}, LLM-Pruner style ~{size}: blocks 4..{n - 3} at {heads} heads, MLP {mlp}")(
        lambda: llm_pruner(make(), heads, mlp))
    register(f"{name}-flap", f"{title}, FLAP style ~{flap_target / 1e9:.1f}B: adaptive per-block heads/MLP, "
             "o/down biases")(lambda: flap(make(), flap_target, seed=flap_seed))


register_family("llama-7b", "LLaMA-7B", _llama7b, {20: 6, 27: 9, 35: 11}, (21, 7156, "4.9B"), 4.9e9, 7)
register_family("vicuna-13b", "Vicuna-13B", _vicuna13b, {21: 8, 29: 11, 37: 15}, (26, 8930, "9.2B"), 9.5e9, 13)
register("small-llama", "mid-size test model: 8 blocks, hidden 1024, 8 heads x 128, MLP 2816, vocab 32000")(
    lambda: dense("small-llama", 32000, 1024, 8, 8, 128, 2816))
register("tiny-llama", "test model: 6 blocks, hidden 64, 4 heads x 16, MLP 160, vocab 320")(_tiny)
register("tiny-llama-depth", "tiny-llama depth-pruned: blocks 3 and 4 removed")(
    lambda: drop_blocks(_tiny(), [3, 4]))
register("tiny-llama-width", "tiny-llama width-pruned: uneven heads/MLP per block, o/down biases")(
    lambda: dataclasses.replace(_tiny(), layers=tuple(
        LayerSpec(n_heads=h, n_kv_heads=h, head_dim=16, mlp_dim=m, o_bias=True, down_bias=True)
        for h, m in zip((4, 3, 2, 1, 3, 4), (160, 96, 64, 40, 120, 160)))))
