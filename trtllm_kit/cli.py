"""The ``trtllm-kit`` command line: each command parses options and calls one library function."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import click

from trtllm_kit import __version__
from trtllm_kit.errors import ToolkitError

KV_MODES = ["auto", "portable", "portable-static", "inplace", "plugin"]  # as BuildOptions.kv_mode

log = logging.getLogger("trtllm_kit")


class _Format(logging.Formatter):
    def format(self, record):
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"warning: {msg}"
        return msg


class Terminated(SystemExit):
    """SIGTERM, turned into an exception so that partial outputs are removed on the way out."""


def _on_sigterm(signum, frame):
    click.echo("terminated; nothing was left half-written", err=True)
    raise Terminated(143)


def setup_logging(verbose: bool) -> None:
    """Library modules log through ``logging``; the CLI sends it to stderr, one plain line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format())
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def user_errors(fn):
    """Print expected errors as one line and exit 2; Ctrl-C exits 130; bugs keep their traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ToolkitError as e:
            click.echo("error: " + str(e).replace("\r", "\\r").replace("\n", "\\n"), err=True)  # one line, always
            sys.exit(2)
        except KeyboardInterrupt as e:
            click.echo(f"interrupted; {e.args[0] if e.args else 'nothing was left half-written'}", err=True)
            sys.exit(130)
    return wrapper


def positive_list(ctx, param, value: str | None):
    """``1,8,16`` -> [1, 8, 16]; anything but positive integers is a usage error naming the flag."""
    if value is None:
        return None
    try:
        out = [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated positive integers, got {value!r}") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"expected comma-separated positive integers, got {value!r}")
    return out


def block_list(ctx, param, value: str):
    try:
        out = [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated block indices, got {value!r}") from None
    if not out:
        raise click.BadParameter("no block given")
    return out


DTYPE = click.Choice(["fp16", "bf16", "fp32"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trtllm-kit")
@click.option("-v", "--verbose", is_flag=True, help="Log details (TensorRT warnings, reuse decisions).")
def main(verbose):
    """Dense and pruned LLaMA models from PyTorch to TensorRT engines, with the numbers to prove it."""
    import signal

    setup_logging(verbose)
    signal.signal(signal.SIGTERM, _on_sigterm)


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
@click.option("--out", required=True, type=click.Path(), help="Output directory.")
@click.option("--dtype", type=DTYPE, default="fp16", show_default=True)
@click.option("--logits", type=click.Choice(["last", "all"]), default="last", show_default=True,
              help="Output logits of the last position only, or of every position.")
@click.option("--validate/--no-validate", default=None,
              help="Compare with transformers (or the reference) through ONNX Runtime [default: on below 1B params].")
@click.option("--opset", type=click.Choice(["17", "18", "19", "20", "21"]), default="17", show_default=True,
              help="ONNX opset (TensorRT 8.6 reads up to 17).")
@click.option("--seed", type=int, default=None, help="Weight seed for presets.")
@click.option("--force", is_flag=True, help="Replace an existing output directory made by trtllm-kit.")
@user_errors
def export(model, out, dtype, logits, validate, opset, seed, force):
    """Export MODEL (a preset or a Hugging Face checkpoint directory) to ONNX with KV-cache I/O."""
    import time

    from trtllm_kit.export import onnx_from_model

    t0 = time.perf_counter()
    res = onnx_from_model(model, out, dtype=dtype, last_only=logits == "last", validate=validate, opset=int(opset),
                          force=force, seed=seed)
    m = res.manifest
    click.echo(f"exported {m.spec.name} ({m.params / 1e6:.1f}M params, {m.blocks} blocks, {dtype}) to "
               f"{res.onnx_path} in {time.perf_counter() - t0:.1f}s (the ONNX export {m.export_seconds:.1f}s, the "
               f"rest loading and validating)")
    v = m.validation
    if m.validation_skipped:
        click.echo(f"validation skipped: {m.validation_skipped}")
    elif v:
        click.echo(f"validation vs {v.reference} (ONNX Runtime, batches {v.batches}, left-padded, prefill + "
                   f"{v.decode_steps} decode steps): max abs err {v.max_abs_err:.3g}, max rel err "
                   f"{v.max_rel_err:.3g}, greedy tokens {v.greedy_match}")


@main.command()
@click.argument("model")
@click.option("--drop-blocks", required=True, callback=block_list, help="Comma-separated block indices to remove.")
@click.option("--out", required=True, type=click.Path())
@click.option("--dtype", type=DTYPE, default="fp16", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing output directory made by trtllm-kit.")
@user_errors
def prune(model, drop_blocks, out, dtype, force):
    """Write a depth-pruned Hugging Face checkpoint of MODEL without the given blocks."""
    from trtllm_kit.prune import depth_prune

    spec = depth_prune(model, drop_blocks, out, dtype=dtype, force=force)
    click.echo(f"wrote {spec.name}: {spec.num_layers} blocks, {spec.param_count() / 1e6:.1f}M params to {out}")


@main.command(epilog="A/B environment variables (TRTLLM_KIT_FUSE, TRTLLM_KIT_GEMM_LAYOUT, TRTLLM_KIT_FOLD, "
              "TRTLLM_KIT_SCALE_IN_WEIGHTS, TRTLLM_KIT_PAST_ATTENTION) change what is built; engines/README.md "
              "lists their values. An existing --out is refused without --force; `trtllm-kit run`/`bench` reuse "
              "an engine built with the same options and rebuild one that differs.")
@click.argument("onnx_dir", type=click.Path())
@click.option("--out", type=click.Path(), default=None, help="Engine directory [default: engines/<export dir name>].")
@click.option("--flavor", type=click.Choice(["auto", "tensorrt", "tensorrt-rtx"]), default="auto", show_default=True)
@click.option("--kv-mode", type=click.Choice(KV_MODES), default="auto",
              show_default=True, help="inplace: native KV layers (TensorRT >= 10.15, RTX); plugin: the toolkit's "
              "KV-cache attention plugin (TensorRT 8.6-10.x, needs nvcc); portable: TensorRT layers, the cache "
              "grows as engine I/O; portable-static: TensorRT layers, a fixed-capacity cache as engine I/O (the same "
              "shapes every decode step); auto: inplace, then plugin, then portable-static.")
@click.option("--max-batch", type=click.IntRange(min=1), default=None, help="Largest batch [default: 384].")
@click.option("--max-input", type=click.IntRange(min=1), default=None, help="Longest prompt [default: 82].")
@click.option("--max-seq", type=click.IntRange(min=2), default=None, help="Longest prompt + output [default: 594].")
@click.option("--opt-batch", type=click.IntRange(min=1), default=None, help="Batch TensorRT tunes for.")
@click.option("--opt-input", type=click.IntRange(min=1), default=None, help="Prompt length TensorRT tunes for.")
@click.option("--profiles", type=click.Choice(["split", "single"]), default="split", show_default=True,
              help="split: prefill and decode profiles; single: one profile for both.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), default=None,
              help="Reused and updated. TensorRT 8.6 refuses a cache holding another model's fused-graph timings "
              "(e.g. the dense model's for a pruned one): the build then goes on without it, leaves the file as it "
              "was and says so in engine.json (timing_cache_note).")
@click.option("--opt-level", type=click.IntRange(0, 5), default=None,
              help="Builder optimization level [default: TensorRT's; on TensorRT 8.6: 1 for portable-static with the "
              "GEMM plugin, 0 for the plugin layout].")
@click.option("--workspace", type=click.FloatRange(min=0, min_open=True), default=None, help="Workspace limit in GB.")
@click.option("--trt-include", type=click.Path(exists=True, file_okay=False), default=None,
              help="TensorRT headers for compiling the KV-cache plugin [default: found automatically].")
@click.option("--weights", type=click.Choice(["engine", "inputs"]), default="engine", show_default=True,
              help="engine: weights inside model.engine; inputs: the weight matrices (projections, embeddings, "
              "lm_head; fp16/fp32 exports) as engine inputs, stored in weights.safetensors beside it and bound once "
              "at load: one copy for every profile, and 7B builds on TensorRT 8.6 in minutes (H200). Experimental: "
              "`check ENGINE_DIR` does not feed such engines.")
@click.option("--gemm", type=click.Choice(["auto", "trt", "plugin"]), default="auto", show_default=True,
              help="Who multiplies by the weight matrices: trt: TensorRT's layers; plugin: the toolkit's cuBLASLt "
              "GEMM plugin (with --kv-mode plugin or portable-static, and --weights inputs; needs cuBLASLt); auto: "
              "the plugin where it can be used.")
@click.option("--norm", type=click.Choice(["auto", "trt", "plugin"]), default="auto", show_default=True,
              help="The RMSNorms: trt: the exported ops; plugin: one TrtllmKitRMSNorm kernel each (with --kv-mode "
              "plugin, portable or portable-static; on TensorRT 8.6 a portable or portable-static 7B engine builds "
              "only so); auto: the plugin with --kv-mode plugin.")
@click.option("--rope", type=click.Choice(["auto", "trt", "plugin"]), default="auto", show_default=True,
              help="Each block's rotary position embedding of q and k: trt: the exported ops; plugin: one "
              "TrtllmKitRotary kernel each (with --kv-mode plugin or portable-static); auto: the plugin with "
              "--kv-mode plugin.")
@click.option("--force", is_flag=True, help="Replace an existing engine directory made by trtllm-kit.")
@user_errors
def build(onnx_dir, out, flavor, kv_mode, max_batch, max_input, max_seq, opt_batch, opt_input, profiles,
          timing_cache, opt_level, workspace, trt_include, weights, gemm, norm, rope, force):
    """Build a TensorRT engine from ONNX_DIR (written by `trtllm-kit export`)."""
    from dataclasses import replace

    from trtllm_kit.engine.builder import default_engine_dir, engine_from_onnx
    from trtllm_kit.engine.limits import DEFAULT_LIMITS
    from trtllm_kit.engine.manifest import BuildOptions

    d = DEFAULT_LIMITS
    limits = replace(d, max_batch=max_batch or d.max_batch, max_input=max_input or d.max_input,
                     max_seq=max_seq or d.max_seq, opt_batch=opt_batch if opt_batch or max_batch else d.opt_batch,
                     opt_input=opt_input if opt_input or max_input else d.opt_input)
    opts = BuildOptions(flavor=flavor, kv_mode=kv_mode, profiles=profiles, limits=limits, opt_level=opt_level,
                        workspace_gb=workspace, timing_cache=timing_cache, trt_include=trt_include, weights=weights,
                        gemm=gemm, norm=norm, rope=rope)
    res = engine_from_onnx(onnx_dir, out or default_engine_dir(onnx_dir), opts, force=force)
    m = res.manifest
    where = f"{m.gpu.name} (cc {m.gpu.compute_capability})" if m.gpu else "no GPU"
    click.echo(f"built {m.flavor} {m.trt_version} engine ({m.kv_layout.name} KV cache, {m.precision}) in "
               f"{m.build_seconds:.1f}s: {res.engine_path} ({m.engine_bytes / 1e6:.1f} MB) for {where}")
    if m.built_without_gpu:
        click.echo("note: the engine was built without a GPU; it runs on compute capability 8.0/8.6/8.9/12.x")


@main.command()
@click.argument("engine_dir", type=click.Path())
@click.option("--layers", is_flag=True, help="Also print the engine's layers (through Polygraphy where installed).")
@click.option("--json", "as_json", is_flag=True, help="Print engine.json as is.")
@user_errors
def inspect(engine_dir, layers, as_json):
    """Print an engine directory's metadata readably."""
    from trtllm_kit.engine.inspect import describe_engine, describe_layers

    click.echo(describe_engine(engine_dir, as_json=as_json))
    if layers:
        click.echo(describe_layers(engine_dir))


@main.command()
@click.argument("path", type=click.Path())
@click.option("--layerwise", is_flag=True,
              help="Compare the RMSNorm outputs, keys/values, attention outputs and residuals of every block on "
                   "the prefill and report the first block that diverges.")
@click.option("--rtol", type=click.FloatRange(min=0), default=None,
              help="Relative tolerance [default: 1e-2 for fp16 and engines, 1e-4 for fp32].")
@click.option("--atol", type=click.FloatRange(min=0), default=None,
              help="Absolute tolerance [default: 5e-2 for fp16 and engines, 1e-4 for fp32].")
@click.option("--batch", type=click.IntRange(min=1), default=3, show_default=True,
              help="Prompts; row b is left-padded by 2*b tokens.")
@click.option("--prompt-len", type=click.IntRange(min=1), default=9, show_default=True)
@click.option("--steps", type=click.IntRange(min=0), default=3, show_default=True,
              help="Decode steps after the prefill.")
@click.option("--seed", type=int, default=0, show_default=True, help="Prompt seed.")
@user_errors
def check(path, layerwise, rtol, atol, batch, prompt_len, steps, seed):
    """Compare PATH with its reference through Polygraphy: an export directory runs in ONNX Runtime against
    the PyTorch reference, an engine directory in TensorRT against ONNX Runtime. Exits 2 on a mismatch."""
    from trtllm_kit.check import check_path

    res = check_path(path, layerwise=layerwise, rtol=rtol, atol=atol, batch=batch, prompt_len=prompt_len,
                     decode_steps=steps, seed=seed)
    click.echo("\n".join(res.lines()))
    res.raise_if_failed()


SWEEP_FLAGS = ("batches", "inputs", "outputs", "warmup", "repeats", "step_tokens")


@main.command(name="bench")
@click.argument("models", nargs=-1, required=True)
@click.option("--backends", default=None,
              help="Comma-separated: eager, ort, trt, compiled (torch.compile on a static KV cache) "
                   "[default: the recipe's, or eager,ort,trt].")
@click.option("--recipe", type=click.Path(dir_okay=False), default=None,
              help="Start from a recipe's backends, sweep, engine, dtype and device; flags override them, and "
                   "the MODELS given (required) replace the recipe's models (`trtllm-kit run RECIPE` runs the "
                   "recipe's own).")
@click.option("--batch", "batches", callback=positive_list, default=None,
              help="Batch sizes, comma-separated [default: the paper's grid, 1 to 384].")
@click.option("--input", "inputs", callback=positive_list, default=None, help="Prompt lengths [default: 12,82].")
@click.option("--output", "outputs", callback=positive_list, default=None, help="Generated lengths [default: 128,512].")
@click.option("--warmup", type=click.IntRange(min=0), default=None, help="Warm-up runs per point [default: 10].")
@click.option("--repeats", type=click.IntRange(min=1), default=None, help="Timed runs per point [default: 20].")
@click.option("--step-tokens", callback=positive_list, default=None, help="Step sweep: tokens per step, e.g. 16,32.")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N [default: auto].")
@click.option("--dtype", type=DTYPE, default=None,
              help="Model dtype [default: that of the exports/engines given, else fp16].")
@click.option("--kv-mode", type=click.Choice(KV_MODES), default=None,
              help="KV layout of engines built for the benchmark [default: the recipe's, or auto].")
@click.option("--cuda-graph", is_flag=True, default=None,
              help="Replay decode steps as CUDA graphs (engines with fixed decode shapes: inplace, plugin, "
              "portable-static).")
@click.option("--work", type=click.Path(), default="artifacts/bench", show_default=True,
              help="Where exports and engines made for the benchmark go (reused when unchanged).")
@click.option("--out", type=click.Path(), default="results.json", show_default=True, help="Results JSON (CSV beside it).")
@user_errors
def bench_cmd(models, backends, recipe, batches, inputs, outputs, warmup, repeats, step_tokens, device, dtype, kv_mode,
              cuda_graph, work, out):
    """Time generation of MODELS (presets, checkpoints, export or engine dirs) on each backend."""
    from trtllm_kit.plan import execute
    from trtllm_kit.recipe import summary_lines

    plan = _bench_plan(models, recipe, backends, work, out)
    overrides = dict(zip(SWEEP_FLAGS, (batches, inputs, outputs, warmup, repeats, step_tokens)))
    plan.sweep = plan.sweep.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if plan.engine is not None:  # a recipe's: the limits it left out fit the sweep as overridden
        from trtllm_kit.plan import limits_with

        plan.engine = plan.engine.model_copy(update={"limits": limits_with(plan.limits_given, plan.sweep)})
    if kv_mode is not None:
        from trtllm_kit.engine.builder import check_plugin_options
        from trtllm_kit.engine.manifest import BuildOptions, EngineManifest

        given = {m: EngineManifest.load(Path(m)).kv_layout.name for m in models
                 if (Path(m) / EngineManifest.FILE).is_file()}  # engines given directly are timed as they were built
        other = {m: built for m, built in given.items() if kv_mode not in ("auto", built)}
        for m, built in other.items():
            if len(given) == len(models):  # --kv-mode would change nothing at all
                raise ToolkitError(f"--kv-mode {kv_mode}: {m} is an engine built with the {built} layout, timed "
                                   "as it is", f"leave --kv-mode out, or give its export directory to build a "
                                   f"{kv_mode} engine")
            log.warning("%s is an engine built with the %s layout: timed as it is (--kv-mode %s applies to the "
                        "engines built for the other models)", m, built, kv_mode)

        plan.engine = (plan.engine or BuildOptions(limits=plan.sweep.limits())).model_copy(update={"kv_mode": kv_mode})
        plan.kv_mode_flag = True
        try:  # a recipe's plugin options may not fit the override: refused before any work, naming both
            check_plugin_options(plan.engine)
        except ToolkitError as e:
            from trtllm_kit.plan import recipe_words

            raise ToolkitError(f"--kv-mode {kv_mode} does not fit the recipe's engine options: "
                               f"{recipe_words(e.message, kv_mode_flag=True)}",
                               "leave --kv-mode out, or change engine.gemm/engine.norm/engine.rope in the "
                               "recipe") from None
    if device is not None:
        plan.device = device
    if dtype is not None:
        from dataclasses import replace

        plan.export = replace(plan.export, dtype=dtype)
    if cuda_graph is not None:
        plan.cuda_graph = cuda_graph
    ignored = [flag for flag, given in (("--kv-mode", kv_mode), ("--cuda-graph", cuda_graph))
               if given is not None]
    if ignored and "trt" not in plan.backends:
        log.warning("%s only change%s the trt backend, which this run does not time", " and ".join(ignored),
                    "" if len(ignored) > 1 else "s")
    res = execute(plan)
    click.echo("\n".join(summary_lines(res.results)))
    click.echo(f"results: {res.results_path} (+ {res.results_path.with_suffix('.csv').name})")


def _bench_plan(models, recipe, backends, work, out):
    from trtllm_kit.plan import Plan

    if recipe:
        from trtllm_kit.recipe import plan_from_recipe

        plan = plan_from_recipe(recipe)
        plan.models, plan.report = list(models), None
        plan.work, plan.results = Path(work), Path(out)
        if backends is not None:
            plan.backends = backends
        return plan
    return Plan(name="bench", models=list(models), backends="eager,ort,trt" if backends is None else backends,
                work=Path(work), results=Path(out))


@main.command()
@click.argument("results", nargs=-1, required=True)
@click.option("--out", type=click.Path(), required=True)
@click.option("--title", default="trtllm-kit benchmark", show_default=True)
@user_errors
def report(results, out, title):
    """Charts, report.md and a self-contained report.html from RESULTS files."""
    from trtllm_kit.report import report_from_results

    html = report_from_results(list(results), out, title=title)
    click.echo(f"report: {html} (and report.md, charts) in {out}")


@main.command()
@click.argument("recipe", type=click.Path())
@click.option("--out", type=click.Path(), default=None, help="Override the recipe's output directory.")
@user_errors
def run(recipe, out):
    """Export -> build -> bench -> report, as RECIPE (YAML) says; unchanged artifacts are reused."""
    from trtllm_kit.plan import execute
    from trtllm_kit.recipe import plan_from_recipe, summary_lines

    res = execute(plan_from_recipe(recipe, out))
    click.echo("\n".join(summary_lines(res.results)))
    for label, note in res.notes.items():
        click.echo(f"{label}: {note}")
    click.echo(f"results: {res.results_path}")
    click.echo(f"report:  {res.report_path}")


def entry() -> None:
    """The console script: usage errors are one line too (``error: ...``, exit 2)."""
    try:
        rc = main(standalone_mode=False)
    except click.exceptions.UsageError as e:
        cmd = e.ctx.command_path if e.ctx else "trtllm-kit"
        click.echo(f"error: {e.format_message()} (see `{cmd} --help`)", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)
