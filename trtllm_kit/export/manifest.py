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
        """Check that ``model.onnx`` is the graph this manifest describes and that its external data files hold
        every initializer (``check_external_data``; their bytes are not hashed: 13.5 GB for a 7B model).

        Raises:
            ToolkitError: the file is missing or was changed after the export, or a data file is missing or short.
        """
        from pathlib import Path

        from trtllm_kit.errors import ToolkitError
        from trtllm_kit.utils.fs import sha256_file

        path = Path(directory) / "model.onnx"
        if not path.is_file():
            raise ToolkitError(f"{directory} has no model.onnx", self.REDO)
        if self.onnx_sha256 and sha256_file(path) != self.onnx_sha256:
            raise ToolkitError(f"{path} was changed after the export (its sha256 differs from export.json's)", self.REDO)
        check_external_data(path, self.REDO)

    def request(self) -> ExportRequest:
        """The request this export answers (weights identified without their hash)."""
        return ExportRequest(model=self.model, weights=self.weights.model_dump(exclude={"sha256"}), dtype=self.dtype,
                             last_only_logits=self.last_only_logits, opset=self.opset,
                             toolkit_version=self.toolkit_version)


def check_external_data(onnx_path, hint: str) -> None:
    """Refuse an ONNX file whose external data files are missing or shorter than its initializers' offsets and
    lengths say: a build whose parser never reads the weights (``--weights inputs``) would otherwise fail only once
    it maps them, after parsing, with a numpy error; other builds with TensorRT's "Failed to import initializer".

    Raises:
        ToolkitError: naming the data file and what it lacks, with ``hint``.
    """
    from pathlib import Path

    import onnx

    from trtllm_kit.errors import ToolkitError

    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path), load_external_data=False)
    need: dict[str, int] = {}
    for init in model.graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location, offset, length, _ = external_span(init)
        need[location] = max(need.get(location, 0), offset + length)
    for location, end in need.items():
        data = onnx_path.parent / location
        if not data.is_file():
            raise ToolkitError(f"{data}, the weights of {onnx_path.name}, is missing", hint)
        if data.stat().st_size < end:
            raise ToolkitError(f"{data} is {data.stat().st_size} bytes, its initializers need {end}: it was cut short "
                               "after the export", hint)


def external_span(init):
    """Where an ONNX initializer stored as external data lies: (file name beside the ONNX file, byte offset, byte
    length, numpy dtype); the length is its ``length`` entry, else its dims times the dtype's size."""
    import numpy as np
    import onnx

    ext = {e.key: e.value for e in init.external_data}
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
    length = int(ext.get("length", int(np.prod(init.dims, dtype=np.int64)) * dtype.itemsize))
    return ext["location"], int(ext.get("offset", 0)), length, dtype
