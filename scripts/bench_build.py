#!/usr/bin/env python3
"""Build engines for a few presets with the installed TensorRT flavour; report build time and size.

Usage: python scripts/bench_build.py [--models tiny-llama tiny-llama-depth tiny-llama-width small-llama]
       [--kv-modes portable inplace] [--work DIR] [--json FILE]
Exports each model first (fp16, last-position logits, not timed), then times `engine_from_onnx`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def main() -> int:
    from trtllm_kit.engine.builder import BuildOptions, engine_from_onnx
    from trtllm_kit.engine.flavors import detect_gpu
    from trtllm_kit.export import onnx_from_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny-llama", "tiny-llama-depth", "tiny-llama-width", "small-llama"])
    ap.add_argument("--kv-modes", nargs="+", default=["portable", "inplace"])
    ap.add_argument("--flavor", default="auto")
    ap.add_argument("--max-batch", type=int, default=384)
    ap.add_argument("--max-input", type=int, default=128)
    ap.add_argument("--max-seq", type=int, default=640)
    ap.add_argument("--work", default="/tmp/trtllm-kit-build-bench")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    gpu = detect_gpu()
    rows = []
    for model in args.models:
        onnx_dir = Path(args.work) / "onnx" / model
        if not (onnx_dir / "export.json").exists():
            onnx_from_model(model, onnx_dir, validate=False, force=True, progress=False)
        onnx_mb = sum(f.stat().st_size for f in onnx_dir.iterdir()) / 1e6
        for mode in args.kv_modes:
            opts = BuildOptions(flavor=args.flavor, kv_mode=mode, max_batch=args.max_batch, max_input=args.max_input,
                                max_seq=args.max_seq)
            t0 = time.perf_counter()
            res = engine_from_onnx(onnx_dir, Path(args.work) / "engines" / f"{model}-{mode}", opts, force=True,
                                   progress=False)
            wall = time.perf_counter() - t0
            m = res.metadata
            row = {"model": model, "params_m": round(m["spec"]["param_count"] / 1e6, 2), "kv_mode": mode,
                   "flavor": f"{m['flavor']} {m['trt_version']}", "build_s": round(wall, 2),
                   "engine_mb": round(m["engine_bytes"] / 1e6, 2), "onnx_mb": round(onnx_mb, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    machine = (f"{gpu.name} (cc {gpu.cc})" if gpu else "no GPU") + f", {os.cpu_count()} CPU cores, {platform.machine()}"
    print(f"\nengine build benchmark ({machine}; limits batch {args.max_batch}, input {args.max_input}, "
          f"seq {args.max_seq})")
    print(f"{'model':18} {'params':>9} {'kv mode':9} {'flavor':22} {'build s':>8} {'engine MB':>10} {'onnx MB':>8}")
    for r in rows:
        print(f"{r['model']:18} {r['params_m']:>8}M {r['kv_mode']:9} {r['flavor']:22} {r['build_s']:>8} "
              f"{r['engine_mb']:>10} {r['onnx_mb']:>8}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
