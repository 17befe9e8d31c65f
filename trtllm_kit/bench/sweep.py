"""``trtllm-kit bench``: one generation, timed the same way on every backend, across the paper's sweep."""

from __future__ import annotations

import csv
import io
import json
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from trtllm_kit.errors import ToolkitError
from trtllm_kit.pipeline import ModelArtifacts
from trtllm_kit.utils.fs import atomic_write_text

PAPER_BATCHES = (1, 8, 16, 32, 64, 128, 256, 384)
BACKENDS = ("eager", "ort", "trt")
CHECK_TOKENS = 16


@dataclass
class SweepConfig:
    """The grid and the protocol. Defaults are the paper's (10 warm-up + 20 timed runs)."""

    batches: list[int] = field(default_factory=lambda: list(PAPER_BATCHES))
    inputs: list[int] = field(default_factory=lambda: [12, 82])
    outputs: list[int] = field(default_factory=lambda: [128, 512])
    warmup: int = 10
    repeats: int = 20
    step_tokens: list[int] = field(default_factory=list)  # e.g. [16, 32, ..., 512]; empty: no step sweep
    step_past: int = 64
    seed: int = 0


def make_runner(backend: str, art: ModelArtifacts, device: str, dtype: str, cuda_graph: bool = False):
    if backend == "eager":
        from trtllm_kit.runtime.eager import eager_runner

        return eager_runner(art.spec, art.weights(), dtype, device)
    if backend == "ort":
        from trtllm_kit.runtime.ort import OrtRunner

        if art.onnx_dir is None:
            raise ToolkitError(f"{art.label}: no ONNX export for the ort backend")
        return OrtRunner(art.onnx_dir, device)
    if backend == "trt":
        from trtllm_kit.runtime.trt import TrtRunner

        if art.engine_dir is None:
            raise ToolkitError(f"{art.label}: no engine for the trt backend")
        return TrtRunner(art.engine_dir, device, cuda_graph=cuda_graph)
    raise ToolkitError(f"unknown backend {backend!r}", f"choose from {', '.join(BACKENDS)}")


def prompt(spec, batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One random prompt repeated ``batch`` times, as the paper does."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, spec.vocab_size, (1, length), generator=g).repeat(batch, 1)
    return ids, torch.ones_like(ids)


def _classify(exc: BaseException) -> tuple[str, str]:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = msg.lower()
    if isinstance(exc, torch.cuda.OutOfMemoryError) or any(
            k in low for k in ("out of memory", "failed to allocate", "can't allocate memory", "cannot allocate memory")):
        return "oom", msg[:300]
    if isinstance(exc, ToolkitError):
        return "skipped", msg[:300]
    return "error", f"{type(exc).__name__}: {msg[:300]}"


def _device_used(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    free, total = torch.cuda.mem_get_info(device)
    return total - free


def time_point(runner, spec, batch: int, inp: int, out: int, cfg: SweepConfig) -> dict:
    """Warm-up then timed generations of one sweep point; the numbers the report shows."""
    ids, mask = prompt(spec, batch, inp, cfg.seed)
    dev = runner.device
    if dev.type == "cuda":
        torch.cuda.empty_cache()  # buffers cached from the previous point do not count against this one
        torch.cuda.reset_peak_memory_stats(dev)
    warm = [runner.generate(ids, mask, out).total_s for _ in range(cfg.warmup)]
    runs = [runner.generate(ids, mask, out) for _ in range(cfg.repeats)]
    lat = sorted(r.total_s for r in runs)
    mean = statistics.fmean(lat)
    decode = [s for r in runs for s in r.decode_s]
    peak = None
    if dev.type == "cuda":
        # Eager: peak allocated by torch, as the paper reports. ONNX Runtime and TensorRT allocate outside
        # torch's allocator, so for them it is the device memory the process holds beyond what it held
        # before the backend was loaded (weights + arenas + KV buffers), or torch's peak if larger.
        peak = torch.cuda.max_memory_allocated(dev)
        if runner.name != "eager":
            peak = max(peak, _device_used(dev) - runner.baseline_used)
        peak /= 1e9
    return {
        "status": "ok", "runs": len(runs), "warmup_runs": len(warm), "warmup_mean_s": statistics.fmean(warm) if warm else None,
        "latency_mean_s": mean, "latency_p50_s": lat[len(lat) // 2],
        "latency_p90_s": lat[min(len(lat) - 1, int(round(0.9 * (len(lat) - 1))))],
        "throughput_tok_s": batch * out / mean,
        "ttft_s": statistics.fmean(r.prefill_s for r in runs),
        "decode_step_ms": 1e3 * statistics.fmean(decode) if decode else None,
        "ms_per_token": 1e3 * mean / out,
        "peak_mem_gb": round(peak, 3) if peak is not None else None,
    }


def check_tokens(runner, spec, reference: torch.Tensor | None, seed: int) -> tuple[dict, torch.Tensor]:
    ids, mask = prompt(spec, 2, 12, seed + 1)
    toks = runner.generate(ids, mask, CHECK_TOKENS).tokens.cpu()
    if reference is None:
        return {"checked_tokens": CHECK_TOKENS, "reference": True, "matches_eager": True, "first_mismatch": None}, toks
    diff = (toks != reference).any(0).nonzero()
    first = int(diff[0]) if len(diff) else None
    return {"checked_tokens": CHECK_TOKENS, "matches_eager": first is None, "first_mismatch": first}, toks


def run_sweep(models: list[ModelArtifacts], backends: list[str], cfg: SweepConfig, device: str = "auto",
              dtype: str = "fp16", cuda_graph: bool = False, progress: bool = True, log=print,
              on_point=None) -> dict:
    """Time every (model, backend, input, output, batch) point; a failing point is recorded, not fatal.

    Args:
        on_point: called with the results so far after every point (to save partial results).

    Returns:
        ``{"points": [...], "correctness": [...], "step_sweep": [...]}``.
    """
    from tqdm import tqdm

    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    for b in backends:
        if b not in BACKENDS:
            raise ToolkitError(f"unknown backend {b!r}", f"choose from {', '.join(BACKENDS)}")
    grid = [(i, o, b) for i in cfg.inputs for o in cfg.outputs for b in sorted(cfg.batches)]
    total = len(models) * len(backends) * (len(grid) + len(cfg.step_tokens))
    bar = tqdm(total=total, desc="bench", unit="point", file=sys.stderr, disable=not progress)
    points, checks, steps = [], [], []
    for art in models:
        eager_tokens = None
        for backend in sorted(backends, key=lambda b: BACKENDS.index(b)):  # eager first: the reference
            base = {"model": art.label, "backend": backend, "device": device}
            runner, impl, failed = None, None, None
            try:
                if backend == "trt" and device != "cuda":
                    raise ToolkitError("built, no GPU to run them" if art.engine_dir else "no GPU to run TensorRT")
                baseline = _device_used(torch.device(device))
                runner = make_runner(backend, art, device, dtype, cuda_graph).activate()
                runner.baseline_used = baseline
                impl = getattr(runner, "impl", backend)
                check, toks = check_tokens(runner, art.spec, eager_tokens, cfg.seed)
                if backend == "eager":
                    eager_tokens = toks
                checks.append({**base, "impl": impl, "status": "ok", **check})
            except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
                status, msg = _classify(e)
                if status == "error":
                    traceback.print_exc(file=sys.stderr)
                failed = (status, msg)
                checks.append({**base, "status": status, "message": msg})
            for inp, out, batch in grid:
                bar.set_postfix_str(f"{art.label} {backend} in{inp} out{out} M{batch}")
                point = {**base, "impl": impl, "batch": batch, "input_len": inp, "output_len": out}
                if failed:
                    point |= {"status": failed[0], "message": failed[1]}
                else:
                    try:
                        runner.check_point(batch, inp, out)
                        point |= time_point(runner, art.spec, batch, inp, out, cfg)
                    except Exception as e:  # noqa: BLE001
                        status, msg = _classify(e)
                        point |= {"status": status, "message": msg}
                        if device == "cuda":
                            torch.cuda.empty_cache()
                points.append(point)
                bar.update(1)
                if on_point:
                    on_point({"points": points, "correctness": checks, "step_sweep": steps})
            for n in cfg.step_tokens:
                bar.set_postfix_str(f"{art.label} {backend} step {n} tokens")
                row = {**base, "impl": impl, "tokens": n, "past": cfg.step_past}
                if failed:
                    row |= {"status": failed[0], "message": failed[1]}
                else:
                    try:
                        runner.check_point(n, cfg.step_past, 2)
                        s = runner.step_latency(n, cfg.step_past)
                        row |= {"status": "ok", "step_ms": 1e3 * s, "ms_per_token": 1e3 * s / n}
                    except Exception as e:  # noqa: BLE001
                        status, msg = _classify(e)
                        row |= {"status": status, "message": msg}
                steps.append(row)
                bar.update(1)
            if runner is not None:
                runner.deactivate()
    bar.close()
    return {"points": points, "correctness": checks, "step_sweep": steps}


CSV_FIELDS = ["model", "backend", "impl", "device", "batch", "input_len", "output_len", "status", "latency_mean_s",
              "latency_p50_s", "latency_p90_s", "throughput_tok_s", "ttft_s", "decode_step_ms", "ms_per_token",
              "peak_mem_gb", "runs", "message"]


def write_results(results: dict, out: str | Path) -> tuple[Path, Path]:
    """``out`` (JSON) and its CSV twin (one row per sweep point), both written atomically."""
    out = Path(out)
    if out.suffix != ".json":
        out = out / "results.json"
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for p in results["points"]:
        w.writerow(p)
    csv_path = out.with_suffix(".csv")
    atomic_write_text(csv_path, buf.getvalue())
    return out, csv_path


def bench(models: list[ModelArtifacts], backends: list[str], cfg: SweepConfig, out: str | Path, device="auto",
          dtype="fp16", cuda_graph=False, progress=True, extra: dict | None = None) -> tuple[dict, Path]:
    """Run the sweep and write the results file with its environment block."""
    from trtllm_kit.bench.env import environment

    t0 = time.perf_counter()
    head = {"format": "trtllm-kit-bench/1", "env": environment(), "config": asdict(cfg),
            "backends": backends, "dtype": dtype,
            "models": [{"label": m.label, "params": m.spec.param_count(), "blocks": m.spec.num_layers,
                        "onnx_dir": str(m.onnx_dir) if m.onnx_dir else None,
                        "engine_dir": str(m.engine_dir) if m.engine_dir else None} for m in models]}
    partial = Path(out).with_suffix(".partial.json") if Path(out).suffix == ".json" else Path(out) / "results.partial.json"

    def save_partial(res):
        atomic_write_text(partial, json.dumps({**head, **res, "partial": True}, indent=2) + "\n")

    res = run_sweep(models, backends, cfg, device, dtype, cuda_graph, progress, on_point=save_partial)
    results = {**head, **res, "wall_s": round(time.perf_counter() - t0, 1), **(extra or {})}
    path, _ = write_results(results, out)
    partial.unlink(missing_ok=True)
    return results, path
