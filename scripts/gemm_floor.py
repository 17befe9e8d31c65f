#!/usr/bin/env python3
"""How fast can cuBLAS run one decode step's weight multiplies alone? (the GEMM part of the batch-1 target)

Every weight multiply of one decode step of a preset (q/k/v/o, gate/up/down per block, the LM head), each with its
own random fp16 weight (so nothing is served from L2, as in a real step), captured back to back in one CUDA graph
and replayed; CUDA events around the replays. Two weight layouts:
  kn: w stored (in x out), y = x @ w   (what the exporter writes)
  nk: w stored (out x in), y = x @ w.T (PyTorch's nn.Linear layout; what the TrtllmKitGemm plugin's inputs hold)
and, with --fused, q/k/v and gate/up as one multiply each (the wip/fuse-proj rewrite). The floor is the weight
bytes over 4.8 TB/s (the H200's HBM3e peak, NVIDIA's H200 datasheet).
Usage: python scripts/gemm_floor.py [--model llama-7b] [--batches 1 16] [--replays 20] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

PEAK_TBPS = 4.8  # H200 HBM3e, NVIDIA datasheet


def step_shapes(spec, fused: bool) -> list[tuple[str, int, int]]:
    """(name, in_features, out_features) of every weight multiply in one decode step, in order."""
    shapes = []
    h = spec.hidden_size
    for i, layer in enumerate(spec.layers):
        q, kv = layer.n_heads * layer.head_dim, layer.n_kv_heads * layer.head_dim
        if fused:
            shapes.append((f"{i}.qkv", h, q + 2 * kv))
        else:
            shapes += [(f"{i}.q", h, q), (f"{i}.k", h, kv), (f"{i}.v", h, kv)]
        shapes.append((f"{i}.o", q, h))
        if fused:
            shapes.append((f"{i}.gate_up", h, 2 * layer.mlp_dim))
        else:
            shapes += [(f"{i}.gate", h, layer.mlp_dim), (f"{i}.up", h, layer.mlp_dim)]
        shapes.append((f"{i}.down", layer.mlp_dim, h))
    shapes.append(("lm_head", h, spec.vocab_size))
    return shapes


def time_step(shapes, layout: str, batch: int, replays: int) -> float:
    """Milliseconds per replay of all ``shapes``' multiplies (fp16, batch rows), one CUDA graph."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    weights, inputs = [], {}
    for _, k, n in shapes:
        w = torch.empty((k, n) if layout == "kn" else (n, k), dtype=torch.float16, device="cuda")
        w.normal_(0, 0.02, generator=gen)
        weights.append(w)
        inputs.setdefault(k, torch.randn(batch, k, dtype=torch.float16, device="cuda", generator=gen))

    def step():
        for (_, k, _), w in zip(shapes, weights):
            _ = inputs[k] @ w if layout == "kn" else torch.nn.functional.linear(inputs[k], w)

    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(2):
            step()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        step()
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(replays):
        graph.replay()
    b.record()
    torch.cuda.synchronize()
    ms = a.elapsed_time(b) / replays
    weights.clear()
    inputs.clear()
    del graph
    torch.cuda.empty_cache()
    return ms


def main() -> int:
    from trtllm_kit.models import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-7b", help="a preset name (its shapes; weights are random)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gemm_floor.py needs a CUDA GPU", file=sys.stderr)
        return 2
    spec, _ = load_model(args.model)
    rows = []
    print(f"{args.model} on {torch.cuda.get_device_name()}, torch {torch.__version__}, {args.replays} graph replays")
    print(f"{'layout':>6} {'fused':>5} {'batch':>5} {'multiplies':>10} {'GB':>6} {'ms/step':>8} {'TB/s':>5} "
          f"{'floor ms':>8}")
    for fused in (False, True):
        shapes = step_shapes(spec, fused)
        gb = sum(k * n for _, k, n in shapes) * 2 / 1e9
        for layout in ("kn", "nk"):
            for batch in args.batches:
                ms = time_step(shapes, layout, batch, args.replays)
                row = {"model": args.model, "layout": layout, "fused": fused, "batch": batch,
                       "multiplies": len(shapes), "weight_gb": round(gb, 3), "ms_per_step": round(ms, 4),
                       "tbps": round(gb / ms, 3), "floor_ms": round(gb / PEAK_TBPS, 4)}
                rows.append(row)
                print(f"{layout:>6} {str(fused):>5} {batch:>5} {len(shapes):>10} {gb:>6.2f} {ms:>8.3f} "
                      f"{gb / ms:>5.2f} {gb / PEAK_TBPS:>8.3f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
