#!/usr/bin/env python3
"""Export big presets on this machine and report wall time, peak RSS and file sizes.

Usage: python scripts/bench_export.py [--models llama-7b vicuna-13b] [--work DIR] [--keep]
The export runs as a child process (the installed `trtllm-kit` console script), so the peak RSS
measured is the exporter's own (ru_maxrss of the child), not this script's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["llama-7b"])
    ap.add_argument("--dtype", default="fp16")
    ap.add_argument("--work", default="/tmp/trtllm-kit-export-bench")
    ap.add_argument("--keep", action="store_true", help="keep the exported files")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    rows = []
    for model in args.models:
        out = Path(args.work) / model
        shutil.rmtree(out, ignore_errors=True)
        cmd = ["trtllm-kit", "export", model, "--out", str(out), "--dtype", args.dtype, "--no-validate"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - t0
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if peak_kb <= before:
            print(f"warning: peak RSS of {model} not above an earlier child's; reading is a lower bound")
        size = sum(f.stat().st_size for f in out.iterdir()) if out.exists() else 0
        meta = json.loads((out / "export.json").read_text()) if proc.returncode == 0 else {}
        row = {"model": model, "dtype": args.dtype, "returncode": proc.returncode, "wall_s": round(wall, 1),
               "peak_rss_gb": round(peak_kb / 1e6, 2), "files_gb": round(size / 1e9, 2),
               "params_b": round(meta.get("spec", {}).get("param_count", 0) / 1e9, 3),
               "fp16_weights_gb": round(meta.get("spec", {}).get("param_count", 0) * 2 / 1e9, 2)}
        if proc.returncode:
            row["error"] = proc.stdout.strip().splitlines()[-1:]
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    env = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU only", "python": platform.python_version()}
    print(f"\nexport benchmark ({env['machine']})")
    print(f"{'model':14} {'params':>8} {'fp16 GB':>8} {'files GB':>9} {'wall s':>8} {'peak RSS GB':>12}")
    for r in rows:
        print(f"{r['model']:14} {r['params_b']:>7}B {r['fp16_weights_gb']:>8} {r['files_gb']:>9} {r['wall_s']:>8} "
              f"{r['peak_rss_gb']:>12}" + (f"  FAILED {r.get('error')}" if r["returncode"] else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    return 1 if any(r["returncode"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
