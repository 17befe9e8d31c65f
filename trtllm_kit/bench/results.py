"""The results file of a sweep (``results.json`` + its CSV twin), typed."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, NonNegativeInt, PositiveInt


from trtllm_kit.engine.limits import PAPER_BATCHES, PAPER_INPUTS, PAPER_OUTPUTS

from trtllm_kit.utils.manifest import Manifest, Record

Status = Literal["ok", "oom", "skipped", "error"]


class SweepConfig(Record):
    """The grid and the protocol. Defaults are the paper's (shared/PAPER.md): batch 1..384, input 12/82,
    output 128/512, 10 warm-up + 20 timed runs per point.

    Attributes:
        batches, inputs, outputs: the grid (sequences, prompt tokens, generated tokens).
        warmup, repeats: runs per point before and during timing.
        step_tokens: the step sweep's tokens per step (empty: none); step_past: cached tokens before it.
        seed: the prompt's seed.
    """

    batches: Annotated[list[PositiveInt], Field(min_length=1)] = list(PAPER_BATCHES)
    inputs: Annotated[list[PositiveInt], Field(min_length=1)] = list(PAPER_INPUTS)
    outputs: Annotated[list[PositiveInt], Field(min_length=1)] = list(PAPER_OUTPUTS)
    warmup: NonNegativeInt = 10
    repeats: PositiveInt = 20
    step_tokens: list[PositiveInt] = []
    step_past: PositiveInt = 64
    seed: int = 0

    def limits(self):
        """The engine limits that serve this sweep."""
        from trtllm_kit.engine.limits import limits_for_sweep

        return limits_for_sweep(self.batches, self.inputs, self.outputs, self.step_tokens, self.step_past)


class Point(Record):
    """One (model, backend, batch, input, output) point: its status and, when ok, its numbers.

    Units: seconds (latency_*, ttft_s, warmup_mean_s), milliseconds (decode_step_ms, ms_per_token),
    generated tokens per second (throughput_tok_s), GB (peak_mem_gb).
    """

    model: str
    backend: str
    impl: str | None = None
    device: str
    batch: int
    input_len: int
    output_len: int
    status: Status
    message: str | None = None
    runs: int | None = None
    warmup_runs: int | None = None
    warmup_mean_s: float | None = None
    latency_mean_s: float | None = None
    latency_p50_s: float | None = None
    latency_p90_s: float | None = None
    throughput_tok_s: float | None = None
    ttft_s: float | None = None
    decode_step_ms: float | None = None
    ms_per_token: float | None = None
    peak_mem_gb: float | None = None


class Check(Record):
    """One model on one backend: the 16-token greedy check against eager, and what setting it up cost.

    Attributes:
        setup_s: seconds to make the runner (load weights or engine, compile) and run its first
            generation (the check), plus the untimed first runs of every new shape during the sweep
            (compilation, CUDA-graph capture): everything the timed runs do not include.
        recompiles: graphs ``torch.compile`` built for this model during the sweep, the first one
            included; None for backends that do not compile.
        matches_eager: None when no eager run of the same model was there to compare with (a sweep without
            eager); ``compare_with_eager`` fills it later from another file's eager tokens.
        tokens: the greedy tokens themselves, [2 sequences][checked_tokens] (format 4 on), so runs made apart
            (other processes, other GPUs) are still checked against eager.
    """

    model: str
    backend: str
    device: str
    impl: str | None = None
    status: Status
    message: str | None = None
    checked_tokens: int | None = None
    reference: bool = False
    matches_eager: bool | None = None
    first_mismatch: int | None = None
    setup_s: float | None = None
    recompiles: int | None = None
    tokens: list[list[int]] | None = None

    def verdict(self) -> str:
        """The check in words: reference, match, first mismatch, not checked, or the failure."""
        if self.status != "ok":
            return f"{self.status}: {self.message}" if self.message else self.status
        if self.reference:
            return "reference"
        if self.matches_eager is None:
            return "not checked (no eager tokens of this model to compare with)"
        return "match" if self.matches_eager else f"first mismatch at token {self.first_mismatch}"


def compare_with_eager(checks: list[Check]) -> list[Check]:
    """``checks`` with every unchecked one (``matches_eager`` None, tokens kept) compared with the eager tokens
    of the same model found among them: runs made in separate processes get the check a single sweep does.

    The tokens come from the same seeded prompt (``bench.sweep.check_tokens``) in every run of one sweep config;
    callers merge files of one config (seed) and one model per label only. A check whose token rows do not all
    hold ``checked_tokens`` tokens, or not as many rows as eager's, stays unchecked.
    """
    def complete(c: Check) -> bool:  # every sequence holds the tokens the check says it made
        return bool(c.tokens) and bool(c.checked_tokens) and all(len(row) == c.checked_tokens for row in c.tokens)

    eager = {c.model: c for c in checks if c.reference and c.status == "ok" and c.tokens is not None and complete(c)}
    out = []
    for c in checks:
        ref = eager.get(c.model)
        if (c.status == "ok" and not c.reference and c.matches_eager is None and ref is not None and complete(c)
                and len(c.tokens) == len(ref.tokens) and c.checked_tokens == ref.checked_tokens):
            diff = [i for i in range(c.checked_tokens) if any(a[i] != b[i] for a, b in zip(c.tokens, ref.tokens))]
            c = c.model_copy(update={"matches_eager": not diff, "first_mismatch": diff[0] if diff else None})
        out.append(c)
    return out


class StepRow(Record):
    """One step of the step sweep: ``tokens`` sequences decoding one token each after ``past`` tokens."""

    model: str
    backend: str
    device: str
    impl: str | None = None
    tokens: int
    past: int
    status: Status
    message: str | None = None
    step_ms: float | None = None
    ms_per_token: float | None = None


class ModelRecord(Record):
    """What the results know of a model: its spec's facts and the artifacts that were timed."""

    label: str
    ref: str | None = None
    params: int
    blocks: int
    weight_bytes: int | None = None
    family: str | None = None
    spec: dict[str, Any] | None = None
    onnx_dir: str | None = None
    engine_dir: str | None = None


class BenchResults(Manifest):
    FILE = "results.json"
    FORMAT = "trtllm-kit-bench/4"
    READS = ("trtllm-kit-bench/1", "trtllm-kit-bench/2", "trtllm-kit-bench/3")
    WHAT = "a results file"
    REDO = "run `trtllm-kit bench` again"
    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    env: dict[str, Any]
    config: SweepConfig
    backends: list[str]
    dtype: str
    models: list[ModelRecord]
    points: list[Point] = []
    correctness: list[Check] = []
    step_sweep: list[StepRow] = []
    wall_s: float | None = None
    partial: bool = False
    recipe: str | None = None
    engine_notes: dict[str, str] = {}

    def sweep_differences(self, other: "BenchResults", timing: bool = True) -> str:
        """How this file's sweep differs from ``other``'s, as "seed 7 vs 0, ..." ("" when they are one sweep):
        prompt and output lengths, seed, dtype, device and, with ``timing``, warm-up and timed runs. Batches may
        differ (a run of fewer batches still belongs to the sweep)."""
        def settings(r: BenchResults) -> dict:
            c = r.config
            timed = {"warm-up": c.warmup, "runs": c.repeats} if timing else {}
            return {"inputs": c.inputs, "outputs": c.outputs, "seed": c.seed, **timed, "dtype": r.dtype,
                    "device": r.env.get("device")}

        mine, theirs = settings(self), settings(other)
        return ", ".join(f"{k} {v} vs {theirs[k]}" for k, v in mine.items() if theirs[k] != v)

    def save(self, path: str | Path) -> Path:
        """Write the JSON and its CSV twin (one row per point), atomically."""
        from trtllm_kit.utils.fs import atomic_write_text

        path = super().save(path)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for p in self.points:
            w.writerow(p.model_dump())
        atomic_write_text(path.with_suffix(".csv"), buf.getvalue())
        return path


CSV_FIELDS = ["model", "backend", "impl", "device", "batch", "input_len", "output_len", "status", "latency_mean_s",
              "latency_p50_s", "latency_p90_s", "throughput_tok_s", "ttft_s", "decode_step_ms", "ms_per_token",
              "peak_mem_gb", "runs", "message"]
