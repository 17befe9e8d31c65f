#!/usr/bin/env python3
"""Where a TensorRT engine's decode step spends its GPU time, layer by layer (TensorRT's IProfiler).

Usage: python scripts/profile_layers.py ENGINE_DIR [--batch 1] [--prompt 12] [--warmup 2] [--steps 8] [--top 25]
       [--json OUT]

Runs a prompt and ``--warmup`` unprofiled decode steps, then ``--steps`` decode steps without CUDA graphs on the
decode context with a profiler attached, and prints the layers' summed time per step grouped by kind (matrix
multiplies, the KV-cache attention plugin, Myelin regions, reformats, pointwise, other) and the slowest layers by name.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict


def kind(name: str) -> str:
    n = name.lower()
    for key, pat in (("reformat", r"reformat|copy"), ("kv attention plugin", r"kvcacheattention|kv_attention"),
                     ("myelin region", r"foreignnode|myelin"), ("matrix multiply", r"matmul|gemm"),
                     ("pointwise", r"pwn|pointwise|mul_|add_|sigmoid|neg_")):
        if re.search(pat, n):
            return key
    return "other"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("engine_dir")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=12)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2,
                    help="Decode steps run before the profiler is attached, so one-time costs (the GEMM plugin's "
                    "cuBLASLt plans, lazily loaded kernels) are not averaged into the first layers' times.")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch

    from trtllm_kit.runtime.trt import TrtRunner

    with TrtRunner(args.engine_dir, "cuda", cuda_graph=False) as runner:
        trt = runner.trt
        times: dict[str, float] = defaultdict(float)

        class Profiler(trt.IProfiler):
            def __init__(self):
                super().__init__()

            def report_layer_time(self, layer_name, ms):
                times[layer_name] += ms

        b, p = args.batch, args.prompt
        ids = torch.randint(3, runner.spec.vocab_size, (b, p), device=runner.device)
        runner.reset(b, p + args.warmup + args.steps + 2)
        logits = runner.prefill_impl(ids, torch.arange(p, device=runner.device).expand(b, p), torch.ones_like(ids))
        full = torch.ones(b, p + args.warmup + args.steps + 2, dtype=torch.int64, device=runner.device)
        tok = logits.argmax(-1, keepdim=True)
        for t in range(args.warmup + args.steps):
            if t == args.warmup:  # first-use costs (plugin plans, lazily loaded kernels) are not per-step time
                prof = Profiler()
                runner.decode_ctx.profiler = prof
            past = p + t
            logits = runner.decode_impl(tok, torch.full((b, 1), past, device=runner.device), full[:, :past + 1], past)
            torch.cuda.synchronize()
            tok = logits.argmax(-1, keepdim=True)
    per_step = {k: v / args.steps for k, v in times.items()}
    groups: dict[str, float] = defaultdict(float)
    for k, v in per_step.items():
        groups[kind(k)] += v
    total = sum(per_step.values())
    print(f"{args.engine_dir}: batch {b}, {len(per_step)} layers, {total:.3f} ms per decode step (profiled, synchronous)")
    for g, v in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {g:22} {v:8.3f} ms  {100 * v / total:5.1f}%")
    print("slowest layers:")
    for k, v in sorted(per_step.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"  {v:8.4f} ms  {k[:150]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"engine_dir": args.engine_dir, "batch": b, "ms_per_step": per_step, "groups": groups}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
