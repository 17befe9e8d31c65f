#!/usr/bin/env python3
"""Is the toolkit's eager path as fast as a plain transformers `generate`? (target: within 5%)

Times, on the same model and GPU, interleaved:
  plain:   model.generate(min_new_tokens=L, max_new_tokens=L) bracketed by CUDA events (the paper's call)
  toolkit: the `eager` runner (transformers generate + per-step CUDA-event markers) via Runner.generate
Usage: python scripts/bench_eager_overhead.py [--model llama-7b] [--batches 1 64] [--input 12] [--output 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch


def main() -> int:
    from trtllm_kit.models import load_model
    from trtllm_kit.runtime.eager import HFEagerRunner

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-7b")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--input", type=int, default=12)
    ap.add_argument("--output", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    spec, weights = load_model(args.model)
    runner = HFEagerRunner(spec, weights, "fp16", "cuda").activate()
    model = runner.model
    rows = []
    for batch in args.batches:
        ids = torch.randint(3, spec.vocab_size, (1, args.input), generator=torch.Generator().manual_seed(0))
        ids = ids.repeat(batch, 1)
        mask = torch.ones_like(ids)
        ids_d, mask_d = ids.cuda(), mask.cuda()

        def plain() -> float:
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            with torch.inference_mode():
                model.generate(input_ids=ids_d, attention_mask=mask_d, do_sample=False, min_new_tokens=args.output,
                               max_new_tokens=args.output)
            b.record()
            torch.cuda.synchronize()
            return a.elapsed_time(b) / 1e3

        def toolkit() -> float:
            return runner.generate(ids, mask, args.output).total_s

        for _ in range(args.warmup):
            plain(), toolkit()
        p, t = [], []
        for _ in range(args.repeats):  # interleaved, so drift hits both alike
            p.append(plain())
            t.append(toolkit())
        mp, mt = statistics.median(p), statistics.median(t)
        row = {"model": args.model, "batch": batch, "input": args.input, "output": args.output,
               "plain_generate_s": round(mp, 4), "toolkit_eager_s": round(mt, 4),
               "overhead_pct": round(100 * (mt - mp) / mp, 2), "plain_runs": p, "toolkit_runs": t}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("runs")}), flush=True)
    gpu = torch.cuda.get_device_name(0)
    print(f"\neager overhead vs plain transformers generate ({gpu}, {args.model}, fp16, median of {args.repeats})")
    print(f"{'batch':>6} {'plain s':>9} {'toolkit s':>10} {'overhead':>9}")
    for r in rows:
        print(f"{r['batch']:>6} {r['plain_generate_s']:>9} {r['toolkit_eager_s']:>10} {r['overhead_pct']:>8}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gpu": gpu, "rows": rows}, f, indent=2)
    return 0 if all(abs(r["overhead_pct"]) <= 5 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
