#!/usr/bin/env python3
"""torch.compile on a static KV cache beside eager and TensorRT: is building an engine worth it? (issue 13)

For each model, the normal ``bench(...)`` sweep of eager, compiled and (with ``--engine MODEL=DIR``) trt
writes ``OUT/<model>.json`` (+ CSV); then a table per model and batch: tokens/s of each backend,
compiled over eager, trt over compiled, and each backend's setup (load + compile + untimed first runs),
over every results file under OUT (so models may be run by separate commands into one OUT).

  H200:  python scripts/bench_compiled.py --out docs/benchmarks/h200-compiled [--engine llama-7b=DIR ...]
  CPU:   python scripts/bench_compiled.py --models tiny-llama --batches 1,2 --output 8 --out /tmp/compiled
  table: python scripts/bench_compiled.py --out DIR --table-only [--trt-results bench_trt/results.json]
         (from the JSONs already there; --trt-results adds bench_trt.py's engines, one column per KV layout)

A model whose command ran out of time leaves ``OUT/<model>.partial.json``; the table reads it too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BACKENDS = ("eager", "compiled", "trt")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory for <model>.json, <model>.csv and summary.md")
    ap.add_argument("--models", default="llama-7b,llama-7b-depth-27", help="comma-separated presets or checkpoints")
    ap.add_argument("--batches", default="1,16,64,256")
    ap.add_argument("--input", type=int, default=12)
    ap.add_argument("--output", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engine", action="append", default=[], metavar="MODEL=DIR",
                    help="a TensorRT engine directory for MODEL: adds the trt backend for it (repeatable)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--dtype", default=None, help="fp16, bf16 or fp32 [default: fp16 on CUDA, fp32 on the CPU]")
    ap.add_argument("--trt-cuda-graph", action=argparse.BooleanOptionalAction, default=True,
                    help="replay trt decode steps as CUDA graphs (in-place engines), as compiled does")
    ap.add_argument("--table-only", action="store_true", help="run nothing; print the table of the JSONs under --out")
    ap.add_argument("--trt-results", action="append", default=[], metavar="FILE",
                    help="a results file of scripts/bench_trt.py (its merged results.json): its TensorRT points and "
                         "checks join the table (repeatable)")
    return ap.parse_args(argv)


def engines_by_model(specs: list[str], models: list[str]) -> dict[str, Path]:
    """``MODEL=DIR`` items as {model: engine dir}. Raises ToolkitError on a malformed item or unknown model."""
    from trtllm_kit.errors import ToolkitError

    out = {}
    for item in specs:
        model, sep, path = item.partition("=")
        if not sep or not model or not path:
            raise ToolkitError(f"--engine wants MODEL=DIR, got {item!r}")
        if model not in models:
            raise ToolkitError(f"--engine names {model!r}, which is not in --models")
        out[model] = Path(path)
    return out


def run_model(model: str, engine: Path | None, args, out: Path) -> Path:
    """One model through the sweep; returns its results JSON."""
    import torch

    from trtllm_kit.bench.backends import RunOptions
    from trtllm_kit.bench.results import SweepConfig
    from trtllm_kit.bench.sweep import bench
    from trtllm_kit.engine.manifest import EngineManifest
    from trtllm_kit.errors import ToolkitError
    from trtllm_kit.pipeline import resolve_models

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    dtype = args.dtype or ("fp16" if device.startswith("cuda") else "fp32")
    art = resolve_models([model])[0]
    backends = ["eager", "compiled"]
    if engine is not None:
        spec = EngineManifest.load(engine).spec
        if (spec.layers, spec.hidden_size, spec.vocab_size) != (art.spec.layers, art.spec.hidden_size,
                                                                art.spec.vocab_size):
            raise ToolkitError(f"engine {engine} holds {spec.name} ({spec.num_layers} blocks), not {model}")
        art.engine_dir, art.given = engine.absolute(), art.given | {"engine"}
        backends.append("trt")
    cfg = SweepConfig(batches=[int(b) for b in args.batches.split(",")], inputs=[args.input], outputs=[args.output],
                      warmup=args.warmup, repeats=args.repeats, step_tokens=[])
    path = out / f"{art.label}.json"
    bench([art], backends, cfg, path, RunOptions(device, dtype, cuda_graph=args.trt_cuda_graph))
    return path


def load_results(out: Path):
    """Every results file under ``out``: the final JSON of a model, else its partial one."""
    from trtllm_kit.bench.results import BenchResults

    final = {p.stem: p for p in out.glob("*.json") if not p.name.endswith(".partial.json")}
    partial = {p.name.removesuffix(".partial.json"): p for p in out.glob("*.partial.json")}
    return [BenchResults.load(path) for _, path in sorted((partial | final).items())]


def trt_only(path: Path):
    """The TensorRT points and checks of a results file (``bench_trt.py``'s merged results.json): the eager
    ones there are another run's and stay out of this table.

    Raises:
        ToolkitError: a missing or unreadable file (``BenchResults.load``).
    """
    from trtllm_kit.bench.results import BenchResults

    from trtllm_kit.errors import ToolkitError

    res = BenchResults.load(path)

    def keep(x):
        return x.backend == "trt" or x.backend.startswith("trt:")

    if not any(keep(p) for p in res.points):
        raise ToolkitError(f"{path} holds no TensorRT results (backends: {', '.join(res.backends)})",
                           "pass the results.json that scripts/bench_trt.py --report-only writes")

    return res.model_copy(update={"points": [p for p in res.points if keep(p)],
                                  "correctness": [c for c in res.correctness if keep(c)]})


def check_one_sweep(results) -> None:
    """Refuse results that one table cannot compare: other lengths, seed, dtype or device than the first file,
    or the same model and backend twice.

    Raises:
        ToolkitError: naming the first offending model or setting.
    """
    from trtllm_kit.errors import ToolkitError

    seen = set()
    for r in results:
        diff = r.sweep_differences(results[0], timing=False)
        if diff:
            raise ToolkitError(f"the results are not one sweep: {diff}",
                               "compare runs of one sweep (lengths, seed, dtype, device)")
        for key in {(p.model, p.backend) for p in r.points}:
            if key in seen:
                raise ToolkitError(f"{key[0]} on {key[1]} is in two results files", "keep one of them")
            seen.add(key)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def table(results) -> str:
    """Markdown: tokens/s per (model, batch) and backend (eager, compiled, then every TensorRT backend found,
    ``trt`` or bench_trt.py's ``trt:<layout>``) with compiled over eager and each engine over compiled, then
    each backend's setup and greedy check (tokens compared across files with ``compare_with_eager``)."""
    from trtllm_kit.bench.results import compare_with_eager

    points = [p for res in results for p in res.points]
    checks = compare_with_eager([c for res in results for c in res.correctness])
    found = {p.backend for p in points}
    trts = sorted(b for b in found if b == "trt" or b.startswith("trt:"))
    cols = [b for b in ("eager", "compiled") if b in found or b == "compiled"] + trts
    heads = ["model", "batch", *(f"{b} tok/s" for b in cols), "compiled / eager", *(f"{b} / compiled" for b in trts)]
    speed = ["| " + " | ".join(heads) + " |", "|---" * len(heads) + "|"]
    setup = ["| model | backend | greedy check | setup s (load + compile + first runs) | compiled graphs | implementation |",
             "|---|---|---|---|---|---|"]
    pts = {(p.model, p.batch, p.backend): p for p in points}
    for model, batch in sorted({(m, b) for m, b, _ in pts}):
        tok, cells = {}, []
        for be in cols:
            p = pts.get((model, batch, be))
            tok[be] = p.throughput_tok_s if p is not None and p.status == "ok" else None
            cells.append(f"{tok[be]:,.1f}" if tok[be] else p.status if p is not None else "-")
        ratios = [_ratio(tok.get("compiled"), tok.get("eager"))] + [_ratio(tok[t], tok.get("compiled")) for t in trts]
        speed.append(f"| {model} | {batch} | {' | '.join(cells)} | {' | '.join(ratios)} |")
    for c in checks:
        secs = f"{c.setup_s:.1f}" if c.setup_s is not None else "-"
        graphs = c.recompiles if c.recompiles is not None else "-"
        setup.append(f"| {c.model} | {c.backend} | {c.verdict()} | {secs} | {graphs} | {c.impl or ''} |")
    first = results[0]
    env = first.env
    head = (f"{env.get('device', '?')}; torch {env.get('torch', '?')}, transformers {env.get('transformers', '?')}; "
            f"{first.dtype}; input {first.config.inputs}, output {first.config.outputs}; {first.config.warmup} "
            f"warm-up + {first.config.repeats} timed runs per point")
    return "\n".join([head, "", *speed, "", *setup, ""])


def main(argv=None) -> int:
    from trtllm_kit.errors import ToolkitError

    args = parse_args(argv)
    out = Path(args.out)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        if args.table_only and not out.is_dir():
            raise ToolkitError(f"--out {out} is not a directory", "pass the --out of earlier bench_compiled.py runs")
        if not args.table_only:
            engines = engines_by_model(args.engine, models)
            out.mkdir(parents=True, exist_ok=True)
            for model in models:
                run_model(model, engines.get(model), args, out)
        results = load_results(out)  # models of earlier commands into the same --out too
        results += [trt_only(Path(f)) for f in args.trt_results]
        check_one_sweep(results)
    except ToolkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not results:
        print(f"error: no results under {out}", file=sys.stderr)
        return 2
    text = table(results)
    try:
        (out / "summary.md").write_text(text)
    except OSError as e:
        print(f"error: {out / 'summary.md'} cannot be written: {e.strerror or e}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
