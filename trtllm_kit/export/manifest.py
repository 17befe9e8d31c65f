"""``export.json``: what an export directory holds, typed."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict

from trtllm_kit import __version__
from trtllm_kit.export.io_spec import TensorIO
from trtllm_kit.models.spec import ModelSpec
from trtllm_kit.utils.manifest import Manifest, Record

Dtype = Literal["fp16", "bf16", "fp32"]


class WeightsRecord(Record):
    """Where the weights came from (seeded preset or checkpoint files) and the sha256 of what was written."""

    model_config = ConfigDict(extra="allow")
    kind: str
    sha256: str | None = None


class IORecord(Record):
    """One graph input or output: name, dtype ("int64" or the model dtype), dims (axis names or sizes)."""

    name: str
    dtype: str
    dims: list[str | int]

    @classmethod
    def of(cls, io: TensorIO, model_dtype: str) -> "IORecord":
        return cls(name=io.name, dtype=io.dtype if io.dtype != "float" else model_dtype, dims=list(io.dims))


class ValidationRecord(Record):
    """The exported graph (ONNX Runtime) against a reference the toolkit did not write, step by step.

    Attributes:
        reference, candidate: the two runners' implementations.
        max_abs_err, max_rel_err: over every compared logit (relative to the reference's max |logit|).
        nonfinite: candidate logits that were NaN or infinite (any fails validation).
        greedy_match: "matching/compared" next-token choices; first_mismatch: where they first differ.
    """

    reference: str
    candidate: str
    batches: list[int]
    prompt_len: int
    decode_steps: int
    left_padding: bool
    max_abs_err: float
    max_rel_err: float
    nonfinite: int
    greedy_match: str
    first_mismatch: dict[str, int] | None
    tolerance: float
    passed: bool


class ExportRequest(Record):
    """Everything that decides an export's content: reuse an export only when this is unchanged."""

    model: str
    weights: dict[str, Any]
    dtype: Dtype
    last_only_logits: bool
    opset: int
    toolkit_version: str = __version__


class ExportManifest(Manifest):
    FILE = "export.json"
    FORMAT = "trtllm-kit-export/2"
    WHAT = "an export directory"
    REDO = "export again with `trtllm-kit export MODEL --out DIR`"

    format: str = FORMAT
    toolkit_version: str
    model: str
    spec: ModelSpec
    params: int
    blocks: int
    weights: WeightsRecord
    dtype: Dtype
    opset: int
    last_only_logits: bool
    external_data: bool
    onnx_sha256: str | None = None
    files: list[str]
    inputs: list[IORecord]
    outputs: list[IORecord]
    validation: ValidationRecord | None = None
    validation_skipped: str | None = None
    export_seconds: float
    created: str

    def verify_onnx(self, directory) -> None:
        """Check that ``model.onnx`` is the graph this manifest describes.

        Raises:
            ToolkitError: the file is missing or was changed after the export.
        """
        from pathlib import Path

        from trtllm_kit.errors import ToolkitError
        from trtllm_kit.utils.fs import sha256_file

        path = Path(directory) / "model.onnx"
        if not path.is_file():
            raise ToolkitError(f"{directory} has no model.onnx", self.REDO)
        if self.onnx_sha256 and sha256_file(path) != self.onnx_sha256:
            raise ToolkitError(f"{path} was changed after the export (its sha256 differs from export.json's)", self.REDO)

    def request(self) -> ExportRequest:
        """The request this export answers (weights identified without their hash)."""
        return ExportRequest(model=self.model, weights=self.weights.model_dump(exclude={"sha256"}), dtype=self.dtype,
                             last_only_logits=self.last_only_logits, opset=self.opset,
                             toolkit_version=self.toolkit_version)
