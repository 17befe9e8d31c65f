#!/usr/bin/env python3
"""Find what makes a TensorRT build slow: the same exported graph built with one knob changed at a time.

Usage: python scripts/probe_trt_build.py CONFIG [CONFIG ...] [--jobs N] [--timeout S] [--work DIR] [--json FILE]

A CONFIG is ``MODEL:KV_MODE[:knob[=value]]...`` (``MODEL@N`` is the preset cut to its first N blocks), e.g.
``llama-7b@2:portable:profiles=decode:io=strict``. Knobs (each changes one thing against the toolkit's
own build of that layout):

- ``profiles=split|single|decode|prefill``: the optimization profiles (decode/prefill: only that one);
- ``opt=N``: builder optimization level;
- ``io=strict``: every network input/output restricted to the linear format in its declared type (no
  format/type candidates for the builder to try at the graph's edges);
- ``norefit``: without the REFIT flag the toolkit sets on TensorRT 8.6 (weights kept refittable) -- the
  probes of 2026-11-29 ran before that default, so their ``refit`` knob is today's default;
- ``winputs``: every constant of at least 2^20 elements becomes a network input (a diagnosis, not an
  engine anyone should ship: it tells whether the time scales with the weights the builder sees);
- ``direct_io``: TensorRT's DIRECT_IO flag (no reformat layers at the network's I/O: 8.6 otherwise converts
  every cache input and output between fp16 and fp32 at the Myelin graph's edge, each step);
- ``weights=inputs``: the toolkit's ``--weights inputs`` (weight matrices as fp16 engine inputs, no REFIT);
- ``tc``: a timing cache file shared by every config of the same model family (``--work``/tc-FAMILY).

Each config builds in its own process (TensorRT's builder is single-threaded here, so ``--jobs`` builds
run side by side); the table gives the wall time, the Myelin compiles found in TensorRT's verbose log
(each "Timing Runner: {ForeignNode...}" to the next runner line) and the layer count after Myelin.
Limits are the quick recipe's (batch 256, input 128, seq 640) unless ``--max-*`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_build import export  # noqa: E402  (same exports, same work dir layout)

RUNNER = re.compile(r"^(\d+\.\d+) .*Timing Runner: (.*)$")


def parse(config: str) -> dict:
    model, kv, *knobs = config.split(":")
    return {"config": config, "model": model, "kv_mode": kv,
            "knobs": dict((k.split("=", 1) + [True])[:2] for k in knobs)}


def child(cfg: dict, onnx_dir: Path, work: Path, args) -> dict:
    """Build one config in this process; returns the measurements."""
    import numpy as np

    from trtllm_kit.engine.builder import _configure, _create_network
    from trtllm_kit.engine.flavors import detect_gpu, resolve_flavor
    from trtllm_kit.engine.kv_layouts import NetworkContext, NetworkIndex, get_layout
    from trtllm_kit.engine.limits import EngineLimits
    from trtllm_kit.engine.manifest import BuildOptions
    from trtllm_kit.export.manifest import ExportManifest

    knobs = cfg["knobs"]
    export_m = ExportManifest.load(onnx_dir)
    spec = export_m.spec
    flavor = resolve_flavor("auto", detect_gpu())
    trt = flavor.trt
    limits = EngineLimits(args.max_batch, args.max_input, args.max_seq).checked()
    options = BuildOptions(kv_mode=cfg["kv_mode"], limits=limits, opt_level=int(knobs["opt"]) if "opt" in knobs else None,
                           workspace_gb=args.workspace_gb, weights=knobs.get("weights", "engine"))
    layout = get_layout(cfg["kv_mode"])
    which = knobs.get("profiles", "split")
    profiles = layout.profiles(limits, "single" if which == "single" else "split")
    profiles = {"decode": profiles[-1:], "prefill": profiles[:1]}.get(which, profiles)
    lines: list[str] = []
    t0 = time.perf_counter()

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            if "Tactic" in msg and "Timing Runner" not in msg:
                return
            lines.append(f"{time.perf_counter() - t0:.1f} [{str(severity).split('.')[-1]}] {msg}")

    logger = Logger()
    if hasattr(trt, "init_libnvinfer_plugins"):
        trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    if hasattr(builder, "max_threads") and "threads" in knobs:
        builder.max_threads = int(knobs["threads"])
    network = _create_network(flavor, builder)
    parser = trt.OnnxParser(network, logger)
    assert layout.parse(parser, onnx_dir / "model.onnx", limits), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    tmp = work / "tmp" / re.sub(r"[^A-Za-z0-9_.-]", "_", cfg["config"])
    tmp.mkdir(parents=True, exist_ok=True)
    ctx = NetworkContext(trt, network, spec, limits, options, tmp, strongly_typed=flavor.strongly_typed)
    layout.prepare_network(ctx)
    config, _ = _configure(flavor, builder, options, cfg["kv_mode"], ctx.precision_constraints)
    if "direct_io" in knobs:  # no reformat layers between the graph and its I/O (the build fails if it needs one)
        config.set_flag(trt.BuilderFlag.DIRECT_IO)
    if "norefit" in knobs:  # the toolkit sets REFIT on TensorRT 8.6; this knob takes it away again
        config.clear_flag(trt.BuilderFlag.REFIT)
    weight_inputs = []
    if knobs.get("weights") == "inputs":  # the toolkit's --weights inputs (fp16 inputs, cast where 8.6 widened)
        from trtllm_kit.engine.weights import weights_to_inputs

        arrays = weights_to_inputs(trt, network, onnx_dir / "model.onnx")
        weight_inputs = [(name, a.shape) for name, a in arrays.items()]
    if "winputs" in knobs:
        index = NetworkIndex(network)
        for name, layer in list(index.producers.items()):
            if layer.type == trt.LayerType.CONSTANT:
                t = layer.get_output(0)
                vol = int(np.prod(list(t.shape))) if len(t.shape) else 1
                if vol >= 1 << 20:
                    w = network.add_input(f"w.{len(weight_inputs)}", t.dtype, t.shape)
                    index.redirect(t, w)
                    weight_inputs.append((w.name, tuple(t.shape)))
    if knobs.get("io") == "strict":
        for t in [network.get_input(i) for i in range(network.num_inputs)] + \
                 [network.get_output(i) for i in range(network.num_outputs)]:
            t.allowed_formats = 1 << int(trt.TensorFormat.LINEAR)
    if "tc" in knobs:
        tc_path = work / f"tc-{cfg['model'].split('@')[0]}"
        cache = config.create_timing_cache(tc_path.read_bytes() if tc_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=True)
    ios = layout.engine_inputs(spec, limits)
    for prof in profiles:
        p = builder.create_optimization_profile()
        for io in ios:
            p.set_shape(io.name, *prof.shapes(io))
        for name, shape in weight_inputs:
            p.set_shape(name, shape, shape, shape)
        config.add_optimization_profile(p)
    t_build = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - t_build
    if "tc" in knobs:
        tc_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
    # Myelin compiles: from each ForeignNode runner line to the next runner line (or the end of timing).
    runs, prev = [], None
    for line in lines:
        m = RUNNER.match(line)
        stamp = float(line.split(" ", 1)[0])
        if prev is not None and (m or "Detected" in line or "Total Host" in line):
            runs.append(round(stamp - prev, 1))
            prev = None
        if m and "ForeignNode" in m.group(2):
            prev = stamp
    after = [line.rsplit(":", 1)[-1].strip() for line in lines if "After Myelin optimization" in line]
    # I/O reformats: 8.6 converted every past_key_values.* Half->Float and present.*/logits Float->Half (llama-7b@8)
    io_reformats = sum("Adding reformat layer" in ln and any(k in ln for k in ("(past_key_values.", "(present.", "(logits"))
                       for ln in lines)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    (work / "logs" / f"{tmp.name}.log").write_text("\n".join(lines) + "\n")
    return {"config": cfg["config"], "ok": plan is not None, "build_s": round(build_s, 1),
            "myelin_compiles_s": runs, "layers_after_myelin": after, "weight_inputs": len(weight_inputs),
            "io_reformats": io_reformats,
            "engine_mb": round(plan.nbytes / 1e6, 1) if plan is not None else None,
            "errors": [ln for ln in lines if "[ERROR]" in ln][-3:]}


def run_one(cfg: dict, onnx_dir: Path, work: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", cfg["config"], "--onnx", str(onnx_dir), "--work", str(work),
           "--max-batch", str(args.max_batch), "--max-input", str(args.max_input), "--max-seq", str(args.max_seq)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                           env={**os.environ, "TRTLLM_KIT_TRT_VERBOSE": ""})
        rows = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
        row = rows[-1] if rows else {"config": cfg["config"], "ok": False, "errors": [p.stderr[-400:]]}
    except subprocess.TimeoutExpired:
        row = {"config": cfg["config"], "ok": "timeout"}
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=420)
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--max-input", type=int, default=128)
    ap.add_argument("--max-seq", type=int, default=640)
    ap.add_argument("--workspace-gb", type=float, default=None)
    ap.add_argument("--work", default="/tmp/trtllm-kit-build-bench")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--onnx", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work)
    if args.child:
        print(json.dumps(child(parse(args.child), Path(args.onnx), work, args)), flush=True)
        return 0
    cfgs = [parse(c) for c in args.configs]
    models = list(dict.fromkeys(c["model"] for c in cfgs))
    with ThreadPoolExecutor(min(len(models), 4)) as pool:  # exports are mostly I/O and numpy
        dirs = dict(zip(models, pool.map(lambda m: export(m, work), models)))
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda c: run_one(c, dirs[c["model"]], work, args), cfgs))
    from trtllm_kit.engine.flavors import detect_gpu

    gpu = detect_gpu()
    machine = (f"{gpu.name} (cc {gpu.cc})" if gpu else "no GPU") + f", {os.cpu_count()} CPU cores, {platform.machine()}"
    print(f"\nbuild probes ({machine}; {args.jobs} at once; limits {args.max_batch}/{args.max_input}/{args.max_seq})")
    print(f"{'config':48} {'ok':>7} {'build s':>8} {'wall s':>7} {'plan MB':>8} {'I/O reformats':>13}  "
          "Myelin compiles (s); layers after Myelin")
    for r in rows:
        print(f"{r['config']:48} {str(r['ok']):>7} {r.get('build_s', ''):>8} {r['wall_s']:>7} {r.get('engine_mb') or '':>8} "
              f"{r.get('io_reformats', ''):>13}  {r.get('myelin_compiles_s', '')} {r.get('layers_after_myelin', '')} {' '.join(r.get('errors') or [])[:200]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "jobs": args.jobs, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
