#!/usr/bin/env python3
"""Where a TensorRT engine's decode step spends its GPU time, layer by layer (TensorRT's IProfiler).

Usage: python scripts/profile_layers.py ENGINE_DIR [--batch 1] [--prompt 12] [--new-tokens 128] [--warmup 2]
       [--steps 8] [--top 25] [--kernels] [--json OUT]

Runs a prompt and ``--warmup`` unprofiled decode steps, then ``--steps`` decode steps without CUDA graphs on the
decode context with a profiler attached, and prints the layers' summed time per step grouped by kind (matrix
multiplies, the KV-cache attention plugin, Myelin regions, the RMSNorm/rotary plugins, reformats, pointwise, the
runner's own torch kernels and copies, other) and the slowest layers by name.
The cache is sized for a generation of ``--prompt`` + ``--new-tokens`` tokens (what a portable-static engine's
decode steps read: the benchmark's 12 in / 128 out by default). ``--kernels`` times the same steps with
``torch.profiler`` instead (CUPTI: every CUDA kernel, also those inside a Myelin region, which TensorRT's profiler
reports as one layer) and prints the kernels' summed time per step by name.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict


def kind(name: str) -> str:
    """The group of a layer (TensorRT's profiler) or a CUDA kernel (``--kernels``) by its name."""
    n = name.lower()
    for key, pat in (("runner (torch), copies", r"at::native|memcpy|memset"),
                     ("reformat", r"reformat|copy|permutation|nchwtonchw"),
                     ("kv attention plugin", r"kvcacheattention|kv_attention|decode_attention|append_kv"),
                     ("myelin region", r"foreignnode|myelin|__myl"), ("matrix multiply", r"matmul|gemm|gemv|nvjet"),
                     ("norm/rotary plugin", r"rms_norm|rmsnorm|rotary|norm_rows"),
                     ("pointwise", r"pwn|pointwise|mul_|add_|sigmoid|neg_|swiglu")):
        if re.search(pat, n):
            return key
    return "other"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("engine_dir", help="An engine directory written by `trtllm-kit build`.")
    ap.add_argument("--batch", type=positive, default=1, help="Sequences per step (default 1).")
    ap.add_argument("--prompt", type=positive, default=12, help="Prompt tokens (default 12).")
    ap.add_argument("--new-tokens", type=positive, default=128,
                    help="The generation the cache is sized for: prompt + this many tokens (at least the steps run; "
                    "default 128).")
    ap.add_argument("--steps", type=positive, default=8, help="Profiled decode steps, averaged (default 8).")
    ap.add_argument("--kernels", action="store_true",
                    help="Time CUDA kernels with torch.profiler (CUPTI) instead of TensorRT's layer profiler.")
    ap.add_argument("--warmup", type=int, choices=range(0, 101), metavar="N", default=2,
                    help="Decode steps run before the profiler is attached, so one-time costs (the GEMM plugin's "
                    "cuBLASLt plans, lazily loaded kernels) are not averaged into the first layers' times.")
    ap.add_argument("--top", type=positive, default=25, help="Slowest layers/kernels listed (default 25).")
    ap.add_argument("--json", default=None, help="Also write the per-step times as JSON.")
    args = ap.parse_args()
    from trtllm_kit.errors import ToolkitError

    try:
        return profile(args)
    except ToolkitError as e:
        ap.error(str(e))


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def profile(args) -> int:
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
        length = p + max(args.new_tokens, args.warmup + args.steps + 1)
        ids = torch.randint(3, runner.spec.vocab_size, (b, p), device=runner.device)
        runner.reset(b, length)
        logits = runner.prefill_impl(ids, torch.arange(p, device=runner.device).expand(b, p), torch.ones_like(ids))
        full = torch.ones(b, length, dtype=torch.int64, device=runner.device)
        tok = logits.argmax(-1, keepdim=True)
        kineto = None
        for t in range(args.warmup + args.steps):
            if t == args.warmup:  # first-use costs (plugin plans, lazily loaded kernels) are not per-step time
                if args.kernels:
                    from torch.profiler import ProfilerActivity, profile

                    kineto = profile(activities=[ProfilerActivity.CUDA])
                    kineto.__enter__()
                else:
                    prof = Profiler()
                    runner.decode_ctx.profiler = prof
            past = p + t
            logits = runner.decode_impl(tok, torch.full((b, 1), past, device=runner.device), full[:, :past + 1], past)
            torch.cuda.synchronize()
            tok = logits.argmax(-1, keepdim=True)
        if kineto is not None:
            kineto.__exit__(None, None, None)
            for e in kineto.key_averages():
                t_us = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
                if t_us:
                    times[f"{e.key} (x{e.count // args.steps})"] += t_us / 1e3
    per_step = {k: v / args.steps for k, v in times.items()}
    groups: dict[str, float] = defaultdict(float)
    for k, v in per_step.items():
        groups[kind(k)] += v
    total = sum(per_step.values())
    what = "CUDA kernels" if args.kernels else "layers"
    print(f"{args.engine_dir}: batch {b}, cache for {length} tokens, {len(per_step)} {what}, {total:.3f} ms per decode "
          "step (profiled, synchronous)")
    for g, v in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {g:22} {v:8.3f} ms  {100 * v / total:5.1f}%")
    print(f"slowest {what}:")
    for k, v in sorted(per_step.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"  {v:8.4f} ms  {k[:150]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"engine_dir": args.engine_dir, "batch": b, "tokens": length, "what": what, "ms_per_step": per_step,
                       "groups": groups}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
