"""``trtllm-kit bench``: one generation, timed the same way on every backend, across the paper's sweep."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import torch

from trtllm_kit.bench.backends import RunOptions, get_backend
from trtllm_kit.bench.results import BenchResults, Check, ModelRecord, Point, StepRow, SweepConfig
from trtllm_kit.errors import ToolkitError

log = logging.getLogger(__name__)
CHECK_TOKENS = 16


def prompt(spec, batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One random prompt repeated ``batch`` times, as the paper does: (input_ids, attention_mask), (B, length)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, spec.vocab_size, (1, length), generator=g).repeat(batch, 1)
    return ids, torch.ones_like(ids)


def classify(exc: BaseException) -> tuple[str, str]:
    """(status, one-line message) of a failed point: ``oom``, ``skipped`` (a user-level reason) or ``error``."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = msg.lower()
    if isinstance(exc, torch.cuda.OutOfMemoryError) or any(
            k in low for k in ("out of memory", "failed to allocate", "can't allocate memory", "cannot allocate memory")):
        return "oom", msg[:300]
    if isinstance(exc, ToolkitError):
        return "skipped", msg[:300]
    return "error", f"{type(exc).__name__}: {msg[:300]}"


def time_point(runner, spec, batch: int, inp: int, out: int, cfg: SweepConfig) -> dict:
    """Warm-up runs, then timed generations of one sweep point; the numbers the report shows.

    Raises:
        ToolkitError: non-finite logits would show as garbage tokens, not here; see ``check_tokens``.
    """
    ids, mask = prompt(spec, batch, inp, cfg.seed)
    runner.reset_peak_memory()
    warm = [runner.generate(ids, mask, out).total_s for _ in range(cfg.warmup)]
    runs = [runner.generate(ids, mask, out) for _ in range(cfg.repeats)]
    lat = sorted(r.total_s for r in runs)
    mean = statistics.fmean(lat)
    decode = [s for r in runs for s in r.decode_s]
    peak = runner.peak_memory_gb()
    return {
        "status": "ok", "runs": len(runs), "warmup_runs": len(warm), "warmup_mean_s": statistics.fmean(warm) if warm else None,
        "latency_mean_s": mean, "latency_p50_s": lat[len(lat) // 2],
        "latency_p90_s": lat[min(len(lat) - 1, int(round(0.9 * (len(lat) - 1))))],
        "throughput_tok_s": batch * out / mean, "ttft_s": statistics.fmean(r.prefill_s for r in runs),
        "decode_step_ms": 1e3 * statistics.fmean(decode) if decode else None, "ms_per_token": 1e3 * mean / out,
        "peak_mem_gb": round(peak, 3) if peak is not None else None,
    }


def check_tokens(runner, spec, reference: torch.Tensor | None, seed: int, is_eager: bool = False
                 ) -> tuple[dict, torch.Tensor]:
    """16 greedy tokens of a 2 x 12 prompt, compared with eager's (``reference``). With no reference, eager's own
    tokens become the reference; any other backend's stay unchecked (``matches_eager`` None) until
    ``results.compare_with_eager`` meets an eager run of the model. The tokens are returned in the dict too.

    Raises:
        ToolkitError: the backend's logits are not finite (fp16 overflow), naming the precision to use.
    """
    ids, mask = prompt(spec, 2, 12, seed + 1)
    finite = []
    toks = runner.loop(ids.to(runner.device), mask.to(runner.device), CHECK_TOKENS,
                       on_logits=lambda t, lg: finite.append(bool(torch.isfinite(lg).all()))).cpu()
    if not all(finite):
        raise ToolkitError("logits are not finite (fp16 overflow)",
                           "export and build with --dtype bf16, or --dtype fp32 (TensorRT 8.6 has no bf16)")
    base = {"checked_tokens": CHECK_TOKENS, "tokens": toks.tolist()}
    if is_eager:
        return base | {"reference": True, "matches_eager": True}, toks
    if reference is None:
        return base, toks
    diff = (toks != reference).any(0).nonzero()
    first = int(diff[0]) if len(diff) else None
    return base | {"matches_eager": first is None, "first_mismatch": first}, toks


def run_sweep(models: list, backends: list[str], cfg: SweepConfig, opts: RunOptions, progress: bool = True,
              on_point=None) -> tuple[list[Point], list[Check], list[StepRow]]:
    """Time every (model, backend, input, output, batch) point; a failing point is recorded, not fatal.

    Args:
        models: ``pipeline.ModelArtifacts`` with what each backend needs.
        backends: registry names, eager first (it is the tokens' reference).
        on_point: called with (points, checks, steps) after every point (to save partial results).
    """
    from trtllm_kit.utils.progress import bars_enabled, progress_bar

    grid = [(i, o, b) for i in cfg.inputs for o in cfg.outputs for b in sorted(cfg.batches)]
    points, checks, steps = [], [], []
    total = len(models) * len(backends) * (len(grid) + len(cfg.step_tokens))
    lines = progress and not bars_enabled(progress)  # a log file or a pipe: one line per timed point instead
    with progress_bar(total=total, desc="bench", unit="point", enabled=progress) as bar:
        for art in models:
            eager_tokens = None
            for name in backends:
                backend = get_backend(name)
                base = {"model": art.label, "backend": name, "device": opts.device}
                runner, impl, failed, setup = None, None, None, None
                try:
                    reason, missing = backend.check(opts.dtype, opts.device), art.missing(backend)
                    if reason and "engine" in backend.needs and art.engine_dir is not None:
                        reason = f"engine built; {reason}"
                    elif reason and missing:  # what the model lacks first (e.g. why its engine was not built)
                        reason = f"{missing}; {reason}"
                    reason = reason or missing
                    if reason:
                        raise ToolkitError(reason)
                    t0 = time.perf_counter()
                    runner = backend.make(art, opts).activate()
                    impl = runner.impl
                    check, toks = check_tokens(runner, art.spec, eager_tokens, cfg.seed, is_eager=name == "eager")
                    setup = Check(**base, impl=impl, status="ok", **check, setup_s=time.perf_counter() - t0)
                    if name == "eager":
                        eager_tokens = toks
                    checks.append(setup)
                except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
                    status, msg = classify(e)
                    if status == "error":
                        log.exception("%s on %s failed", art.label, name)
                    failed = (status, msg)
                    checks.append(Check(**base, status=status, message=msg))
                    log.warning("%s / %s: %s: %s", art.label, name, status, msg)
                for inp, out, batch in grid:
                    bar.set_postfix_str(f"{art.label} {name} in{inp} out{out} M{batch}")
                    point = {**base, "impl": impl, "batch": batch, "input_len": inp, "output_len": out}
                    if failed:
                        point |= {"status": failed[0], "message": failed[1]}
                    else:
                        try:
                            runner.check_point(batch, inp, out)
                            point |= time_point(runner, art.spec, batch, inp, out, cfg)
                        except Exception as e:  # noqa: BLE001
                            status, msg = classify(e)
                            point |= {"status": status, "message": msg}
                            log.warning("%s / %s M%d in%d out%d: %s: %s", art.label, name, batch, inp, out, status, msg)
                            if opts.device.startswith("cuda"):
                                torch.cuda.empty_cache()
                    points.append(Point(**point))
                    bar.update(1)
                    if lines and not failed:
                        p = points[-1]
                        said = (f"{p.throughput_tok_s:,.0f} tok/s, {p.decode_step_ms:.2f} ms/step"
                                if p.status == "ok" and p.throughput_tok_s and p.decode_step_ms else p.status)
                        log.info("bench [%d/%d] %s / %s in%d out%d M%d: %s", len(points) + len(steps), total,
                                 art.label, name, inp, out, batch, said)
                    if on_point:
                        on_point(points, checks, steps)
                for n in cfg.step_tokens:
                    row = {**base, "impl": impl, "tokens": n, "past": cfg.step_past}
                    if failed:
                        row |= {"status": failed[0], "message": failed[1]}
                    else:
                        try:
                            runner.check_point(n, cfg.step_past, 2)
                            s = runner.step_latency(n, cfg.step_past)
                            row |= {"status": "ok", "step_ms": 1e3 * s, "ms_per_token": 1e3 * s / n}
                        except Exception as e:  # noqa: BLE001
                            row |= dict(zip(("status", "message"), classify(e)))
                    steps.append(StepRow(**row))
                    bar.update(1)
                if runner is not None:
                    if setup is not None:  # what the timed runs left out: compiling and capturing new shapes
                        setup.setup_s = round(setup.setup_s + runner.first_run_s, 3)
                        setup.recompiles = runner.compiled_graphs()
                    runner.deactivate()
    return points, checks, steps


def model_record(art, dtype: str = "fp16") -> ModelRecord:
    """What the results file records of a model: counts, family and per-block shapes read from its spec.

    ``weight_bytes`` is the parameter count times the bytes of one weight in ``dtype``.
    """
    from trtllm_kit.utils.dtypes import DTYPE_BYTES

    spec = art.spec
    return ModelRecord(label=art.label, ref=art.ref, params=spec.param_count(), blocks=spec.num_layers,
                       weight_bytes=spec.weight_bytes(DTYPE_BYTES[dtype]), family=family_of(spec),
                       spec={"hidden_size": spec.hidden_size, "vocab_size": spec.vocab_size,
                             "layers": [vars(la) for la in spec.layers], "source_layers": spec.source_layers},
                       onnx_dir=str(art.onnx_dir) if art.onnx_dir else None,
                       engine_dir=str(art.engine_dir) if art.engine_dir else None)


def family_of(spec) -> str:
    """Models of one family share the hidden size, vocabulary and head dim: pruning (depth or width)
    changes none of them. Read from the spec, never from the name."""
    return f"hidden {spec.hidden_size}, vocab {spec.vocab_size}, head dim {spec.layers[0].head_dim}"


def bench(models: list, backends: list[str], cfg: SweepConfig, out: str | Path, opts: RunOptions,
          progress: bool = True, extra: dict | None = None) -> BenchResults:
    """Run the sweep and write the results file (+ CSV) with its environment block; partial results are
    saved beside it after every point and removed at the end."""
    from trtllm_kit.bench.env import environment

    t0 = time.perf_counter()
    out = Path(out)
    head = dict(env=environment(), config=cfg, backends=backends, dtype=opts.dtype,
                models=[model_record(m, opts.dtype) for m in models], **(extra or {}))
    partial = out.with_suffix(".partial.json")

    def save_partial(points, checks, steps):
        BenchResults(**head, points=points, correctness=checks, step_sweep=steps, partial=True).save(partial)

    try:
        points, checks, steps = run_sweep(models, backends, cfg, opts, progress, on_point=save_partial)
    except KeyboardInterrupt:
        if partial.is_file():
            raise KeyboardInterrupt(f"the points timed so far are in {partial} (a complete, valid results file "
                                    "marked partial)") from None
        raise
    results = BenchResults(**head, points=points, correctness=checks, step_sweep=steps,
                           wall_s=round(time.perf_counter() - t0, 1))
    results.save(out)
    partial.unlink(missing_ok=True)
    partial.with_suffix(".csv").unlink(missing_ok=True)
    return results
