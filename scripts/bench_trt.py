#!/usr/bin/env python3
"""TensorRT against eager on a GPU: the quick recipe's subset, per KV-cache layout, with the numbers
issues 7 and 10 ask for.

Usage: python scripts/bench_trt.py [--models llama-7b llama-7b-depth-27 llama-7b-llmpruner]
       [--kv-modes portable plugin] [--backends eager,trt] [--batches 1,16,64,256] [--input 12] [--output 128]
       [--warmup 1] [--repeats 3] [--work DIR] [--out DIR] [--cleanup] [--breakdown MODEL]
       [--weights engine|inputs] [--gemm auto|trt|plugin] [--norm auto|trt|plugin] [--rope auto|trt|plugin]
       [--cuda-graph] [--opt-level N]
       [--lock FILE] [--build-after FILE] [--report-only]

For each model: export once, build one engine per KV layout (a timing cache shared by the family, split
profiles, limits max batch 256 / input 128 / seq 640 as the quick recipe), time every backend through
`trtllm-kit bench`'s own sweep, then print per model: the batch-1 decode step (ms) against the
weight-streaming floor (weight bytes / the GPU's bandwidth, 4.8 TB/s on an H200), throughput at each
batch, TensorRT over eager, and the 16-token greedy check. ``--breakdown`` adds, for that model at batch
1, the host time of a decode step (shape setting, binding, enqueue) against its GPU time.
Writes ``results-<layout>.json`` per layout; ``--report-only`` merges every ``results-*.json`` under ``--out``
(subfolders too: one process per model and layout) into ``merged/results.json`` (TensorRT backends named
``trt:<layout>``, greedy tokens compared with the eager run's) and ``merged/report/``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

def held(path: str | None, shared: bool = False):
    """A lock on ``path`` (released by closing what this returns), or a no-op without a path.

    Builds take it shared and timings exclusive: a timing waits for every build on the same GPU (TensorRT times
    kernels there while it builds; on the H200 on 2026-11-30 a model timed beside two builds ran slow) and for
    other timings; builds run side by side.
    """
    import fcntl
    import os

    f = open(path or os.devnull, "a")
    if path is None:
        return f
    t0 = time.perf_counter()
    fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    print(f"lock {path} held{' (shared, building)' if shared else ''} after {time.perf_counter() - t0:.0f}s",
          flush=True)
    return f


MERGED = "merged"  # the folder under --out that --report-only writes (and only it)
LAYOUT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def merge_runs(out: Path):
    """Every ``results-*.json`` under ``out`` (subfolders too: one process per model and layout; a run stopped
    early leaves only its ``.partial.json``, which is read and marks the merge partial) as one results object:
    backends ``eager`` and ``trt:<layout>`` (the file name's), greedy checks compared with eager's tokens.

    Returns:
        (merged ``BenchResults``, the files read).

    Raises:
        ToolkitError: no such files; an unreadable file; a file that is not one bench_trt.py run (one backend,
            eager or trt, and a plain layout name); files of different sweeps (lengths, seed, warm-up and timed
            runs, dtype, device); one label for two different models; the same model and backend in two files.
    """
    from trtllm_kit.bench.results import BenchResults, compare_with_eager
    from trtllm_kit.errors import ToolkitError

    if not out.is_dir():
        raise ToolkitError(f"--out {out} is not a directory", "pass the --out of the bench_trt.py runs to merge")
    runs: dict[str, list] = {}
    for f in sorted(out.rglob("results-*.json")):
        if MERGED in f.relative_to(out).parts or not f.is_file():
            continue
        if f.name.endswith(".partial.json") and f.with_name(f.name.replace(".partial.json", ".json")).is_file():
            continue
        res = BenchResults.load(f)
        layout = f.name.removeprefix("results-").removesuffix(".json").removesuffix(".partial")
        if res.backends not in (["eager"], ["trt"]):
            raise ToolkitError(f"{f} holds {', '.join(res.backends) or 'no backend'}: not one bench_trt.py run "
                               "(eager, or trt in one layout)", "move it out of --out")
        if res.backends == ["trt"] and (not LAYOUT_NAME.fullmatch(layout) or layout == "eager"):
            raise ToolkitError(f"{f} holds a TensorRT run, but {layout!r} is no layout name",
                               "name it results-<layout>.json (letters, digits, . _ -), as bench_trt.py does")
        runs.setdefault("eager" if res.backends == ["eager"] else f"trt:{layout}", []).append((f, res))
    if not runs:
        raise ToolkitError(f"no results-*.json under {out}", "run scripts/bench_trt.py with this --out first")
    ref_file, ref = (runs.get("eager") or next(iter(runs.values())))[0]

    records, seen = {}, {}
    for key, items in runs.items():
        for f, res in items:
            diff = res.sweep_differences(ref)
            if diff:
                raise ToolkitError(f"{f} is another sweep than {ref_file}: {diff}", "merge one sweep per --out")
            for m in res.models:
                prev_f, prev = records.setdefault(m.label, (f, m))
                if (m.params, m.blocks, m.family, m.spec) != (prev.params, prev.blocks, prev.family, prev.spec):
                    raise ToolkitError(f"{f} and {prev_f} time different models as {m.label} ({m.params:,} and "
                                       f"{prev.params:,} parameters)", "give one of them another label")
            for label in {p.model for p in res.points} | {c.model for c in res.correctness}:
                if (key, label) in seen:
                    raise ToolkitError(f"{label} on {key} is in both {seen[key, label]} and {f}",
                                       "keep one of them under --out")
                seen[key, label] = f
    files = [f for items in runs.values() for f, _ in items]
    batches = sorted({b for items in runs.values() for _, r in items for b in r.config.batches})
    merged = ref.model_copy(update={
        "points": [], "correctness": [], "step_sweep": [], "backends": [],
        "config": ref.config.model_copy(update={"batches": batches}),
        "models": [m for _, m in records.values()], "partial": any(r.partial for items in runs.values()
                                                                     for _, r in items),
        "env": {**ref.env, "command": "scripts/bench_trt.py --report-only",
                "merged_from": [str(f.relative_to(out)) for f in files]}})
    for key in sorted(runs, key=lambda k: k != "eager"):
        merged.backends.append(key)
        for _, res in runs[key]:
            for coll in ("points", "correctness", "step_sweep"):
                getattr(merged, coll).extend(x.model_copy(update={"backend": key}) for x in getattr(res, coll))
    merged.correctness = compare_with_eager(merged.correctness)  # trt runs made apart from eager's
    return merged, files


def read_builds(out: Path) -> list[dict]:
    """The build records (``builds-*.json``) under ``out``: model, kv_mode, build_s, engine_gb, phases.

    Raises:
        ToolkitError: an unreadable file, or one that is not a list of such records.
    """
    from trtllm_kit.errors import ToolkitError

    builds = []
    for f in sorted(out.rglob("builds-*.json")):
        if MERGED in f.relative_to(out).parts:
            continue
        try:
            rows = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            raise ToolkitError(f"{f} cannot be read as JSON ({e})", "move it out of --out") from None
        if not isinstance(rows, list) or not all(
                isinstance(r, dict) and {"model", "kv_mode", "build_s", "engine_gb"} <= set(r)
                and isinstance(r.get("phases", {}), dict) for r in rows):
            raise ToolkitError(f"{f} is not a list of bench_trt.py build records", "move it out of --out")
        builds += rows
    return builds


def write_merge(merged, out: Path, title: str) -> Path:
    """``out/merged/``: results.json (+ CSV) and report/, written whole or not at all; an earlier merge there
    is replaced, any other folder of that name refused.

    Raises:
        ToolkitError: see above, or the report's own errors (nothing is left half-written).
    """
    from trtllm_kit.report import report_from_results
    from trtllm_kit.utils.fs import atomic_dir

    with atomic_dir(out / MERGED, force=True, kind="bench-merge", flag="--out (its merged/ folder)") as tmp:
        merged.save(tmp / "results.json")
        report_from_results([tmp / "results.json"], tmp / "report", title=title,
                            shown_as=[out / MERGED / "results.json"])
    return out / MERGED


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=None,
                    help="[default: llama-7b llama-7b-depth-27 llama-7b-llmpruner; with --report-only: every model "
                         "in the results] (--report-only reads the sweep from the results: --batches, --input, "
                         "--output, --warmup and --repeats are ignored)")
    ap.add_argument("--kv-modes", nargs="+", default=["portable", "plugin"])
    ap.add_argument("--backends", default="eager,trt")
    ap.add_argument("--batches", default="1,16,64,256")
    ap.add_argument("--input", type=int, default=12)
    ap.add_argument("--output", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cuda-graph", action="store_true", help="CUDA-graph decode for static-cache layouts.")
    ap.add_argument("--work", default="/root/work")
    ap.add_argument("--out", default="docs/benchmarks/h200-trt86")
    ap.add_argument("--breakdown", default=None, help="Model whose batch-1 decode step is split into host/GPU time.")
    ap.add_argument("--opt-level", type=int, default=None)
    ap.add_argument("--weights", choices=["engine", "inputs"], default="engine",
                    help="inputs: weights as engine inputs (trtllm-kit build --weights inputs).")
    ap.add_argument("--norm", choices=["auto", "trt", "plugin"], default="auto",
                    help="trtllm-kit build --norm (auto: the RMSNorm plugin with --kv-modes plugin).")
    ap.add_argument("--rope", choices=["auto", "trt", "plugin"], default="auto",
                    help="trtllm-kit build --rope (auto: the rotary plugin with --kv-modes plugin).")
    ap.add_argument("--gemm", choices=["auto", "trt", "plugin"], default="auto",
                    help="trtllm-kit build --gemm (auto: the cuBLASLt GEMM plugin with --kv-modes plugin and "
                    "--weights inputs).")
    ap.add_argument("--lock", default=None,
                    help="A lock file per GPU: builds hold it shared, timings exclusive, so runs sharing a GPU build side "
                    "by side and time in turn, never beside a build.")
    ap.add_argument("--build-after", default=None, metavar="FILE",
                    help="Wait until FILE exists before the first build (e.g. a timing cache another build is filling).")
    ap.add_argument("--cleanup", action="store_true", help="Delete each layout's engines once timed (disk space).")
    ap.add_argument("--report-only", action="store_true",
                    help="Run nothing: merge the results files already under --out (from runs split across GPUs).")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")  # build heartbeats

    from trtllm_kit.bench.backends import RunOptions, parse_backends
    from trtllm_kit.bench.results import SweepConfig
    from trtllm_kit.bench.sweep import bench
    from trtllm_kit.engine.limits import EngineLimits
    from trtllm_kit.engine.manifest import BuildOptions
    from trtllm_kit.pipeline import ensure_engine, ensure_export, resolve_models
    from trtllm_kit.utils.fs import inside

    work, out = Path(args.work), Path(args.out)
    if args.report_only:
        return report(args, out)
    from trtllm_kit.engine.builder import check_plugin_options
    from trtllm_kit.errors import ToolkitError

    try:
        backends = parse_backends(args.backends)
    except ToolkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for mode in args.kv_modes if "trt" in backends else []:
        try:  # a plugin option a layout cannot use: refused before any export or timing
            check_plugin_options(BuildOptions(kv_mode=mode, limits=EngineLimits(256, 128, 640), weights=args.weights,
                                              gemm=args.gemm, norm=args.norm, rope=args.rope))
        except ToolkitError as e:
            print(f"error: --kv-modes {mode}: {e}", file=sys.stderr)
            return 2
    import torch

    if not torch.cuda.is_available():
        print("error: scripts/bench_trt.py times on a CUDA GPU and none is visible here (use `trtllm-kit bench` on "
              "a CPU; --report-only merges results anywhere)", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    cfg = SweepConfig(batches=[int(b) for b in args.batches.split(",")], inputs=[args.input], outputs=[args.output],
                      warmup=args.warmup, repeats=args.repeats)
    limits = EngineLimits(256, 128, 640, opt_batch=16, opt_input=args.input)
    opts = RunOptions("cuda", "fp16", cuda_graph=args.cuda_graph)
    arts = [] if args.report_only else resolve_models(args.models or ["llama-7b", "llama-7b-depth-27",
                                                                      "llama-7b-llmpruner"])
    # Results, engines and timing caches are named by layout and opt level, so runs at two levels can share --work.
    suffix = (f"-opt{args.opt_level}" if args.opt_level is not None else "") + \
        ("-winputs" if args.weights == "inputs" else "") + (f"-gemm{args.gemm}" if args.gemm != "auto" else "") + \
        (f"-norm{args.norm}" if args.norm != "auto" else "") + (f"-rope{args.rope}" if args.rope != "auto" else "") + \
        (f"-past{os.environ['TRTLLM_KIT_PAST_ATTENTION']}" if os.environ.get("TRTLLM_KIT_PAST_ATTENTION") else "")
    builds_file = out / f"builds-{'-'.join(args.kv_modes)}{suffix}.json"
    builds = []
    for art in arts if "trt" in backends else []:
        ensure_export(art, inside(work, "onnx", art.label), progress=False)
    if "eager" in backends:
        lock = held(args.lock)
        bench(arts, ["eager"], cfg, out / "results-eager.json", opts, progress=False)
        lock.close()
    for mode in args.kv_modes if "trt" in backends else []:
        options = BuildOptions(kv_mode=mode, limits=limits, opt_level=args.opt_level, weights=args.weights,
                               gemm=args.gemm, norm=args.norm, rope=args.rope, timing_cache=str(work / f"timing-{mode}{suffix}.cache"))
        if args.build_after:
            t0 = time.perf_counter()
            while not Path(args.build_after).is_file():
                time.sleep(5)
            print(f"{args.build_after} is there after {time.perf_counter() - t0:.0f}s", flush=True)
        building = held(args.lock, shared=True)
        for art in arts:
            art.engine_dir = None
            t0 = time.perf_counter()
            eng = ensure_engine(art, inside(work, "engines", mode + suffix, art.label), options, progress=False)
            m = json.loads((eng / "engine.json").read_text())
            builds.append({"model": art.label, "kv_mode": mode + suffix, "wall_s": round(time.perf_counter() - t0, 1),
                           "build_s": m["build_seconds"], "phases": m["build_phases"],
                           "engine_gb": round(m["engine_bytes"] / 1e9, 2)})
            print(json.dumps(builds[-1]), flush=True)
        building.close()
        lock = held(args.lock)
        bench(arts, ["trt"], cfg, out / f"results-{mode}{suffix}.json", opts, progress=False)
        if args.breakdown:
            from trtllm_kit.runtime.trt import TrtRunner, step_breakdown

            art = next(a for a in arts if a.label == args.breakdown)
            with TrtRunner(art.engine_dir, "cuda", cuda_graph=args.cuda_graph) as runner:
                bd = step_breakdown(runner, 1, args.input)
            bd |= {"model": art.label, "kv_mode": mode + suffix, "impl": runner.impl}
            (out / f"breakdown-{mode}{suffix}.json").write_text(json.dumps(bd, indent=2) + "\n")
            print(json.dumps(bd), flush=True)
        lock.close()
        if args.cleanup:
            import shutil

            shutil.rmtree(inside(work, "engines", mode + suffix), ignore_errors=True)
    if "trt" in backends:
        builds_file.write_text(json.dumps(builds, indent=2) + "\n")
    return 0


def report(args, out: Path) -> int:
    """--report-only: merge the runs under ``out``, write ``out/merged/`` (results.json and the report), print
    the summary."""
    from trtllm_kit.errors import ToolkitError

    try:
        merged, files = merge_runs(out)
        builds = read_builds(out)
        unknown = sorted(set(args.models or []) - {m.label for m in merged.models})
        if unknown:
            raise ToolkitError(f"--models names {', '.join(unknown)}, which the results under {out} do not hold",
                               "leave --models out to summarize every model")
        env = merged.env
        title = (f"TensorRT vs eager on {env.get('device', '?')}"
                 + (f" (TensorRT {env['tensorrt']})" if env.get("tensorrt") else ""))
        where = write_merge(merged, out, title)
    except ToolkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"merged {len(files)} files into {where}/results.json and {where}/report/: "
          + ", ".join(str(f.relative_to(out)) for f in files))
    cfg = merged.config
    device = merged.env.get("device", "?")  # where the runs were timed (report-only may run anywhere)
    from trtllm_kit.report.floor import bandwidth_of  # the report's datasheet table, one for both

    known = bandwidth_of(device)
    bw = known[1] * 1e9 if known else None
    print(f"\n{device}; {merged.dtype}; input {cfg.inputs[0]}, output {cfg.outputs[0]}; "
          f"{cfg.warmup} warm-up + {cfg.repeats} timed runs per point; merged from {len(files)} files"
          + (" (some partial: a run stopped early)" if merged.partial else ""))
    for art in merged.models:  # as the results record them (weight bytes in the runs' dtype)
        if args.models and art.label not in args.models:
            continue
        floor_ms = art.weight_bytes / bw * 1e3 if bw else None
        print(f"\n{art.label}: {art.params / 1e9:.2f}B params, {art.blocks} blocks, "
              f"weight-streaming floor {floor_ms:.2f} ms/step" if floor_ms else f"\n{art.label}")
        pts = {(p.backend, p.batch): p for p in merged.points if p.model == art.label}

        def ok(name, b):
            p = pts.get((name, b))
            return p if p is not None and p.status == "ok" and p.throughput_tok_s else None

        print(f"  {'backend':22} {'step ms M1':>10} {'% floor':>8} " + " ".join(f"{'tok/s M' + str(b):>12}" for b in
                                                                             cfg.batches) + "  vs eager by batch")
        for name in merged.backends:
            if not any(k[0] == name for k in pts):
                continue  # this backend's runs did not include the model
            p1 = ok(name, 1)
            step = p1.decode_step_ms if p1 else None
            pct = f"{100 * floor_ms / step:.0f}%" if step and floor_ms else ""
            tps = " ".join(f"{ok(name, b).throughput_tok_s:>12.0f}" if ok(name, b) else
                           f"{pts[name, b].status if (name, b) in pts else '-':>12}" for b in cfg.batches)
            ratio = " ".join(f"{ok(name, b).throughput_tok_s / ok('eager', b).throughput_tok_s:.2f}x"
                             if name != "eager" and ok(name, b) and ok("eager", b) else
                             "" if name == "eager" else "-" for b in cfg.batches)
            print(f"  {name:22} {'-' if step is None else f'{step:.2f}':>10} {pct:>8} {tps}  {ratio}")
        for c in merged.correctness:
            if c.model == art.label and c.backend != "eager":
                print(f"  {c.checked_tokens or 0}-token greedy check {c.backend}: {c.verdict()}")
    for b in builds:
        print(f"build {b['model']} ({b['kv_mode']}): {b['build_s']}s, engine {b['engine_gb']} GB; " +
              ", ".join(f"{k.split(' (')[0]} {v}s" for k, v in b.get("phases", {}).items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
