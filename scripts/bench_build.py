#!/usr/bin/env python3
"""Build engines for several configurations, in parallel, and report where the build time goes.

Usage: python scripts/bench_build.py CONFIG [CONFIG ...] [--jobs N] [--timeout S] [--max-batch N] [--max-input N]
       [--max-seq N] [--opt-batch N] [--opt-input N] [--timing-cache] [--work DIR] [--json FILE]

A CONFIG is ``MODEL:KV_MODE[:opt=N][:weights=inputs][:gemm=trt|plugin][:norm=trt|plugin][:rope=trt|plugin]
[:profiles=single][:batch=N][:seq=N][:past=reduce-vt|reduce|matmul|split-vt]``, e.g. ``tiny-llama:portable``,
``llama-7b@2:plugin:opt=1``; ``past`` is portable-static's ``TRTLLM_KIT_PAST_ATTENTION`` for that build.
``MODEL@N`` is the preset cut to its first N blocks (same shapes per block),
which measures the per-block build cost of a large model in a fraction of its time.
Each model is exported once (fp16, not validated, not timed). Each build runs as its own
``trtllm-kit build`` process (so a slow one can be stopped at ``--timeout``); the table gives its wall
time, the builder phases recorded in engine.json, the engine size and how many Myelin ForeignNodes
the engine holds (from layers.json; one ForeignNode over the whole graph is what makes 8.6 slow).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def export(model: str, work: Path) -> Path:
    from trtllm_kit.export import onnx_from_model
    from trtllm_kit.models import load_model
    from trtllm_kit.models.weights import SeededWeights
    from trtllm_kit.utils.fs import safe_component

    out = work / "onnx" / safe_component(model)
    if (out / "export.json").is_file():
        return out
    name, _, blocks = model.partition("@")
    spec, weights = load_model(name)
    if blocks:
        spec = spec.with_layers(list(range(int(blocks))), name=safe_component(model))
        weights = SeededWeights(spec)
    t0 = time.perf_counter()
    onnx_from_model(model, out, validate=False, force=True, progress=False, loaded=(spec, weights))
    print(f"exported {model} ({spec.param_count() / 1e6:.0f}M params) in {time.perf_counter() - t0:.0f}s", flush=True)
    return out


KEYS = ("opt", "weights", "gemm", "norm", "rope", "profiles", "batch", "seq", "past")


def parse(config: str) -> dict:
    """``MODEL:KV_MODE[:KEY=VALUE...]`` -> {"config", "model", "kv_mode", KEY: VALUE}.

    Raises:
        argparse.ArgumentTypeError: no KV mode, a part without ``=``, or a key that is not one of ``KEYS``.
    """
    model, _, rest = config.partition(":")
    kv, *parts = rest.split(":") if rest else [""]
    if not model or not kv:
        raise argparse.ArgumentTypeError(f"{config!r}: expected MODEL:KV_MODE[:KEY=VALUE...]")
    opts = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq or key not in KEYS:
            raise argparse.ArgumentTypeError(f"{config!r}: {part!r} is not KEY=VALUE with KEY one of {', '.join(KEYS)}")
        opts[key] = value
    return {"config": config, "model": model, "kv_mode": kv, **opts}


def build(cfg: dict, onnx_dir: Path, work: Path, timeout: float, args) -> dict:
    from trtllm_kit.utils.fs import safe_component

    out = work / "engines" / safe_component(cfg["config"].replace(":", "_").replace("=", ""))
    cmd = ["trtllm-kit", "-v", "build", str(onnx_dir), "--out", str(out), "--force", "--kv-mode", cfg["kv_mode"],
           "--max-batch", cfg.get("batch", str(args.max_batch)), "--max-input", str(args.max_input),
           "--max-seq", cfg.get("seq", str(args.max_seq)), "--profiles", cfg.get("profiles", "split")]
    for flag, value in (("--opt-batch", args.opt_batch), ("--opt-input", args.opt_input)):
        if value is not None:  # e.g. the values scripts/bench_trt.py builds with, so a timing cache carries over
            cmd += [flag, str(value)]
    if "opt" in cfg:
        cmd += ["--opt-level", cfg["opt"]]
    if "weights" in cfg:
        cmd += ["--weights", cfg["weights"]]
    for option in ("gemm", "norm", "rope"):
        if option in cfg:
            cmd += [f"--{option}", cfg[option]]
    if args.timing_cache:
        cmd += ["--timing-cache", str(work / f"{cfg['model'].split('@')[0]}.timing-cache")]
    log = work / "logs" / f"{out.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        try:
            env = {**os.environ, **({"TRTLLM_KIT_PAST_ATTENTION": cfg["past"]} if "past" in cfg else {})}
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, env=env).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.perf_counter() - t0
    row = {**cfg, "wall_s": round(wall, 1), "rc": rc, "log": str(log)}
    if rc == 0:
        m = json.loads((out / "engine.json").read_text())
        row |= {"engine_mb": round(m["engine_bytes"] / 1e6, 1), "phases": m.get("build_phases", {}),
                "flavor": f"{m['flavor']} {m['trt_version']}"}
        layers = out / "layers.json"
        if layers.is_file():
            names = [la if isinstance(la, str) else la.get("Name", "") for la in json.loads(layers.read_text(), strict=False).get("Layers", [])]
            foreign = [n for n in names if "ForeignNode" in n or "myelin" in n.lower()]
            row |= {"layers": len(names), "foreign_nodes": len(foreign),
                    "largest_foreign": max(foreign, key=len)[:120] if foreign else ""}
    else:
        row["tail"] = log.read_text()[-600:]
    print(json.dumps({k: v for k, v in row.items() if k != "tail"}), flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+", type=parse, metavar="CONFIG")
    ap.add_argument("--jobs", type=positive, default=1, help="Builds at once (they share the GPU: timings get noisier).")
    ap.add_argument("--timeout", type=float, default=540, help="Seconds before a build is stopped (default 540).")
    ap.add_argument("--max-batch", type=positive, default=256, help="Engine limit (default 256; CONFIG batch= wins).")
    ap.add_argument("--max-input", type=positive, default=128, help="Engine limit: longest prompt (default 128).")
    ap.add_argument("--max-seq", type=positive, default=640, help="Engine limit: prompt + output (default 640; seq=).")
    ap.add_argument("--opt-batch", type=int, default=None, help="trtllm-kit build --opt-batch (what TensorRT tunes for).")
    ap.add_argument("--opt-input", type=int, default=None, help="trtllm-kit build --opt-input.")
    ap.add_argument("--timing-cache", action="store_true", help="One timing cache per model family, reused.")
    ap.add_argument("--work", default="/tmp/trtllm-kit-build-bench",
                    help="Exports, engines and logs go here (default /tmp/trtllm-kit-build-bench).")
    ap.add_argument("--json", default=None, help="Also write the rows as JSON.")
    args = ap.parse_args()
    from trtllm_kit.engine.flavors import detect_gpu
    from trtllm_kit.errors import ToolkitError

    work = Path(args.work)
    cfgs = args.configs
    try:
        dirs = {m: export(m, work) for m in dict.fromkeys(c["model"] for c in cfgs)}
    except ToolkitError as e:
        ap.error(str(e))
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda c: build(c, dirs[c["model"]], work, args.timeout, args), cfgs))
    gpu = detect_gpu()
    machine = (f"{gpu.name} (cc {gpu.cc})" if gpu else "no GPU") + f", {os.cpu_count()} CPU cores, {platform.machine()}"
    print(f"\nengine builds ({machine}; {args.jobs} at once; limits batch {args.max_batch}, input {args.max_input}, "
          f"seq {args.max_seq})")
    print(f"{'config':34} {'wall s':>7} {'rc':>7} {'engine MB':>10} {'layers':>7} {'foreign':>8}  phases")
    for r in rows:
        phases = ", ".join(f"{k.split(' (')[0]} {v:.0f}s" for k, v in r.get("phases", {}).items())
        print(f"{r['config']:34} {r['wall_s']:>7} {str(r['rc']):>7} {r.get('engine_mb', ''):>10} "
              f"{r.get('layers', ''):>7} {r.get('foreign_nodes', ''):>8}  {phases}")
        if r.get("tail"):
            print("   " + r["tail"].strip().replace("\n", "\n   ")[-400:])
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "jobs": args.jobs, "rows": rows}, indent=2) + "\n")
    failed = [r["config"] for r in rows if r["rc"] != 0]
    if failed:
        print(f"{len(failed)} of {len(rows)} builds failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


if __name__ == "__main__":
    sys.exit(main())
