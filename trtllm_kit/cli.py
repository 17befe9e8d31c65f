"""The ``trtllm-kit`` command line: each command parses options and calls one library function."""

from __future__ import annotations

import functools
import sys

import click

from trtllm_kit import __version__
from trtllm_kit.errors import ToolkitError


def user_errors(fn):
    """Print expected errors as one line and exit 2; bugs keep their traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ToolkitError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; nothing was left half-written", err=True)
            sys.exit(130)
    return wrapper


def int_list(ctx, param, value: str | None):
    if value is None:
        return None
    try:
        return [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trtllm-kit")
def main():
    """Dense and pruned LLaMA models from PyTorch to TensorRT engines, with the numbers to prove it."""


@main.command()
@user_errors
def models():
    """List the model presets with their layer and parameter counts."""
    from trtllm_kit.models.presets import PRESETS

    click.echo(f"{'preset':24} {'blocks':>6} {'params':>9}  description")
    for name, preset in PRESETS.items():
        spec = preset.spec()
        n = spec.param_count()
        size = f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"
        click.echo(f"{name:24} {spec.num_layers:>6} {size:>9}  {preset.description}")


@main.command()
@click.argument("model")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--dtype", type=click.Choice(["fp16", "bf16", "fp32"]), default="fp16", show_default=True)
@click.option("--logits", type=click.Choice(["last", "all"]), default="last", show_default=True,
              help="Output logits of the last position only, or of every position.")
@click.option("--validate/--no-validate", default=None,
              help="Compare with PyTorch through ONNX Runtime [default: on below 1B parameters].")
@click.option("--opset", type=int, default=17, show_default=True)
@click.option("--seed", type=int, default=None, help="Weight seed for presets.")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@user_errors
def export(model, out, dtype, logits, validate, opset, seed, force):
    """Export MODEL (a preset or a Hugging Face checkpoint directory) to ONNX with KV-cache I/O."""
    from trtllm_kit.export import onnx_from_model

    res = onnx_from_model(model, out, dtype=dtype, last_only=logits == "last", validate=validate, opset=opset,
                          force=force, seed=seed)
    meta = res.metadata
    click.echo(f"exported {meta['spec']['name']} ({meta['spec']['param_count'] / 1e6:.1f}M params, "
               f"{meta['spec']['num_layers']} blocks, {dtype}) to {res.onnx_path} in {meta['export_seconds']:.1f}s")
    v = meta["validation"]
    if v and "skipped" in v:
        click.echo(f"validation skipped: {v['skipped']}")
    elif v:
        click.echo(f"validation vs PyTorch (ONNX Runtime, batches {v['batches']}, left-padded, prefill + "
                   f"{v['decode_steps']} decode steps): max abs err {v['max_abs_err']:.3g}, max rel err "
                   f"{v['max_rel_err']:.3g}, greedy tokens {v['greedy_match']}")


@main.command()
@click.argument("model")
@click.option("--drop-blocks", required=True, callback=int_list, help="Comma-separated block indices to remove.")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--dtype", type=click.Choice(["fp16", "bf16", "fp32"]), default="fp16", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@user_errors
def prune(model, drop_blocks, out, dtype, force):
    """Write a depth-pruned Hugging Face checkpoint of MODEL without the given blocks."""
    from trtllm_kit.prune import depth_prune

    spec = depth_prune(model, drop_blocks, out, dtype=dtype, force=force)
    click.echo(f"wrote {spec.name}: {spec.num_layers} blocks, {spec.param_count() / 1e6:.1f}M params to {out}")


@main.command()
@click.argument("onnx_dir", type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Engine directory [default: engines/<model>-<flavor>-<kv-mode>].")
@click.option("--flavor", type=click.Choice(["auto", "tensorrt", "tensorrt-rtx"]), default="auto", show_default=True)
@click.option("--kv-mode", type=click.Choice(["auto", "portable", "inplace"]), default="auto", show_default=True,
              help="inplace: preallocated caches updated by native KV layers (TensorRT >= 10.15, RTX).")
@click.option("--max-batch", type=int, default=384, show_default=True)
@click.option("--max-input", type=int, default=128, show_default=True, help="Longest prompt.")
@click.option("--max-seq", type=int, default=640, show_default=True, help="Longest prompt + output.")
@click.option("--opt-batch", type=int, default=None, help="Batch TensorRT tunes for [default: 16].")
@click.option("--opt-input", type=int, default=None, help="Prompt length TensorRT tunes for [default: 82].")
@click.option("--profiles", type=click.Choice(["split", "single"]), default="split", show_default=True,
              help="split: prefill and decode profiles; single: one profile for both.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), default=None, help="Reused and updated.")
@click.option("--opt-level", type=click.IntRange(0, 5), default=None, help="Builder optimization level.")
@click.option("--workspace", type=float, default=None, help="Workspace limit in GB.")
@click.option("--force", is_flag=True, help="Replace an existing engine directory.")
@user_errors
def build(onnx_dir, out, flavor, kv_mode, max_batch, max_input, max_seq, opt_batch, opt_input, profiles,
          timing_cache, opt_level, workspace, force):
    """Build a TensorRT engine from ONNX_DIR (written by `trtllm-kit export`)."""
    from trtllm_kit.engine.builder import BuildOptions, default_engine_dir, engine_from_onnx

    opts = BuildOptions(flavor=flavor, kv_mode=kv_mode, profiles=profiles, max_batch=max_batch, max_input=max_input,
                        max_seq=max_seq, opt_batch=opt_batch, opt_input=opt_input, opt_level=opt_level,
                        workspace_gb=workspace, timing_cache=timing_cache)
    res = engine_from_onnx(onnx_dir, out or default_engine_dir(onnx_dir, opts), opts, force=force)
    m = res.metadata
    where = m["gpu"] if isinstance(m["gpu"], str) else f"{m['gpu']['name']} (cc {m['gpu']['compute_capability']})"
    click.echo(f"built {m['flavor']} {m['trt_version']} engine ({m['kv_mode']} KV cache, {m['precision']}) "
               f"in {m['build_seconds']:.1f}s: {res.engine_path} ({m['engine_bytes'] / 1e6:.1f} MB) for {where}")
    if isinstance(m["gpu"], str):
        click.echo("note: the engine was built without a GPU; it runs on compute capability 8.0/8.6/8.9/12.x")


@main.command()
@click.argument("engine_dir", type=click.Path())
@click.option("--layers", is_flag=True, help="Also print TensorRT's per-layer engine information.")
@click.option("--json", "as_json", is_flag=True, help="Print engine.json as is.")
@user_errors
def inspect(engine_dir, layers, as_json):
    """Print an engine directory's metadata readably."""
    from trtllm_kit.engine.inspect import describe_engine

    click.echo(describe_engine(engine_dir, layers=layers, as_json=as_json))


@main.command(name="bench")
@click.argument("models", nargs=-1, required=True)
@click.option("--backends", default="eager,ort,trt", show_default=True, help="Comma-separated: eager, ort, trt.")
@click.option("--recipe", type=click.Path(dir_okay=False), default=None, help="Take the sweep and engine options from a recipe.")
@click.option("--batch", "batches", callback=int_list, default=None, help="Batch sizes [default: the paper's 1..384].")
@click.option("--input", "inputs", callback=int_list, default=None, help="Prompt lengths [default: 12,82].")
@click.option("--output", "outputs", callback=int_list, default=None, help="Generated lengths [default: 128,512].")
@click.option("--warmup", type=int, default=None, help="Warm-up runs per point [default: 10].")
@click.option("--repeats", type=int, default=None, help="Timed runs per point [default: 20].")
@click.option("--step-tokens", callback=int_list, default=None, help="Step sweep: tokens per step, e.g. 16,32,...,512.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--dtype", type=click.Choice(["fp16", "bf16", "fp32"]), default="fp16", show_default=True)
@click.option("--cuda-graph", is_flag=True, help="Replay decode steps as CUDA graphs (in-place TensorRT engines).")
@click.option("--work", type=click.Path(file_okay=False), default="artifacts/bench", show_default=True,
              help="Where exports and engines made for the benchmark go (reused when unchanged).")
@click.option("--out", type=click.Path(), default="results.json", show_default=True, help="Results JSON (CSV beside it).")
@user_errors
def bench_cmd(models, backends, recipe, batches, inputs, outputs, warmup, repeats, step_tokens, device, dtype,
              cuda_graph, work, out):
    """Time generation of MODELS (presets, checkpoints, export or engine dirs) on each backend."""
    from pathlib import Path

    from trtllm_kit.bench.sweep import SweepConfig, bench
    from trtllm_kit.pipeline import prepare_models
    from trtllm_kit.recipe import build_options, load_recipe, summary_lines, sweep_config

    rec = load_recipe(recipe) if recipe else {}
    cfg = sweep_config(rec) if rec else SweepConfig()
    for name, value in (("batches", batches), ("inputs", inputs), ("outputs", outputs), ("warmup", warmup),
                        ("repeats", repeats), ("step_tokens", step_tokens)):
        if value is not None:
            setattr(cfg, name, value)
    names = [b.strip() for b in backends.split(",") if b.strip()]
    arts, _ = prepare_models(list(models), names, Path(work), build_options(rec, cfg), dtype=dtype,
                             log=lambda m: click.echo(m, err=True))
    results, path = bench(arts, names, cfg, out, device=device, dtype=dtype, cuda_graph=cuda_graph)
    click.echo("\n".join(summary_lines(results["points"])))
    click.echo(f"results: {path} (+ {path.with_suffix('.csv').name})")


@main.command()
@click.argument("results", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--title", default="trtllm-kit benchmark", show_default=True)
@user_errors
def report(results, out, title):
    """Charts, report.md and a self-contained report.html from RESULTS files."""
    from trtllm_kit.report import report_from_results

    html = report_from_results(list(results), out, title=title)
    click.echo(f"report: {html} (and report.md, charts) in {out}")


@main.command()
@click.argument("recipe", type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Override the recipe's output directory.")
@user_errors
def run(recipe, out):
    """Export -> build -> bench -> report, as RECIPE (YAML) says; unchanged artifacts are reused."""
    from trtllm_kit.recipe import run_recipe, summary_lines

    res = run_recipe(recipe, out, log=lambda m: click.echo(m, err=True))
    click.echo("\n".join(summary_lines(res["points"])))
    for label, note in res["notes"].items():
        click.echo(f"{label}: {note}")
    click.echo(f"results: {res['results']}")
    click.echo(f"report:  {res['report']}")


if __name__ == "__main__":
    main()
