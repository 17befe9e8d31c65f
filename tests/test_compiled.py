"""The compiled backend (torch.compile on a static KV cache): eager's tokens, the common timing structure,
setup and recompiles in the results, and one clear line where it cannot run.

Shapes are shared between tests (batch 2, prompt 12, 16 tokens: the sweep's check) so that inductor's
on-disk cache serves the repeats.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trtllm_kit.bench.backends import RunOptions, get_backend
from trtllm_kit.bench.results import SweepConfig
from trtllm_kit.bench.sweep import bench, prompt
from trtllm_kit.export.validate import left_padded_prompts
from trtllm_kit.models import load_model
from trtllm_kit.pipeline import resolve_model
from trtllm_kit.runtime.compiled import HFCompiledRunner, ReferenceCompiledRunner, compiled_runner
from trtllm_kit.runtime.eager import eager_runner

ROOT = Path(__file__).resolve().parent.parent
NEW = 16


def _same_as_eager(name: str, runner_cls, ids, mask):
    spec, weights = load_model(name)
    with eager_runner(spec, weights, "fp32") as eager:
        want = eager.generate(ids, mask, NEW).tokens
    runner = compiled_runner(spec, weights, "fp32")
    assert isinstance(runner, runner_cls)
    with runner:
        first = runner.generate(ids, mask, NEW)  # compiles (untimed), then the timed run
        assert runner.first_run_s > 0 and runner.compiled_graphs() >= 1
        graphs = runner.compiled_graphs()
        again = runner.generate(ids, mask, NEW)
        assert runner.compiled_graphs() == graphs, "a second run of the same shape recompiled"
        looped = runner.loop(ids, mask, NEW)  # the step methods: the sweep's check and comparisons
    for res in (first, again):
        assert torch.equal(res.tokens, want)
        assert len(res.decode_s) == NEW - 1 and res.prefill_s > 0
        assert res.total_s == pytest.approx(res.prefill_s + sum(res.decode_s), rel=1e-6)
    assert torch.equal(looped, want)


def test_dense_compiled_matches_eager():
    """Dense: transformers' generate on a static cache, its decode forward compiled."""
    spec, _ = load_model("tiny-llama")
    _same_as_eager("tiny-llama", HFCompiledRunner, *prompt(spec, 2, 12, seed=1))


def test_width_pruned_compiled_matches_eager():
    """Width-pruned (uneven blocks, biases): the reference on static per-block caches, left-padded prompts."""
    spec, _ = load_model("tiny-llama-width")
    ids, mask = left_padded_prompts(spec, 2, 12, seed=1)
    assert not bool(mask.all())
    _same_as_eager("tiny-llama-width", ReferenceCompiledRunner, ids, mask)


def test_bench_reports_setup_and_recompiles(tmp_path):
    cfg = SweepConfig(batches=[2], inputs=[12], outputs=[NEW], warmup=0, repeats=2)
    bench([resolve_model("tiny-llama")], ["eager", "compiled"], cfg, tmp_path / "r.json", RunOptions("cpu", "fp32"),
          progress=False)
    res = json.loads((tmp_path / "r.json").read_text())
    checks = {c["backend"]: c for c in res["correctness"]}
    assert checks["compiled"]["matches_eager"] and checks["compiled"]["impl"].startswith("transformers.generate")
    assert checks["compiled"]["setup_s"] > 0 and checks["eager"]["setup_s"] > 0
    # the check's step methods and generate's own loop are two graphs; nothing recompiled per run
    assert 1 <= checks["compiled"]["recompiles"] <= 3 and checks["eager"]["recompiles"] is None
    (point,) = [p for p in res["points"] if p["backend"] == "compiled"]
    assert point["status"] == "ok" and point["runs"] == 2


def test_without_a_compiler_the_backend_says_why_in_one_line(monkeypatch, tmp_path):
    import trtllm_kit.runtime.compiled as compiled

    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    why = get_backend("compiled").check("fp32", "cpu")
    assert why and "C++ compiler" in why and "\n" not in why
    cfg = SweepConfig(batches=[1], inputs=[4], outputs=[2], warmup=0, repeats=1)
    bench([resolve_model("tiny-llama")], ["compiled"], cfg, tmp_path / "r.json", RunOptions("cpu", "fp32"),
          progress=False)
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["correctness"][0]["status"] == "skipped" and res["correctness"][0]["message"] == why
    assert res["points"][0]["status"] == "skipped"


@pytest.mark.slow
def test_bench_compiled_script_on_the_cpu(tmp_path):
    """The H200 script's own code path, on the tiny model."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_compiled.py"), "--models", "tiny-llama",
                           "--batches", "1,2", "--output", "8", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "tiny-llama.json").is_file() and (tmp_path / "summary.md").is_file()
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("| tiny-llama |")]
    assert [r.split("|")[2].strip() for r in rows[:2]] == ["1", "2"]
    assert all("x |" in r for r in rows[:2])  # compiled over eager, for both batches
    setup = {r.split("|")[2].strip(): r for r in rows[2:]}
    assert "| match |" in setup["compiled"] and "reference" in setup["eager"]
