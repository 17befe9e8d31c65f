"""The weight inputs' file (``weights.safetensors``), made beside TensorRT's build.

A 7B model's weight inputs are 13.5 GB: stacking and transposing them, folding norm scales into them, writing and
hashing them took 33 s of host time before TensorRT started (H200, llama-7b, sixteenth session: 14 s of the 23 s of
"preparing the network", 19 s of "writing the weight inputs"). The network only needs their shapes, so the values
are ``Deferred`` until a writer thread makes them, one tensor at a time, while TensorRT builds (whose build takes
minutes and releases the GIL; the writer's copies (torch), file writes and hashing release it too).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

log = logging.getLogger("trtllm_kit.engine")

# safetensors' names of the dtypes a weight input can have (bf16 is refused by weights_to_inputs)
_DTYPES = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32"}


class Deferred:
    """A weight input's value, made when it is read: its shape and dtype are known now, its bytes later.

    ``np.asarray(d)`` (or ``d.value()``) makes it, every time it is read (nothing is cached: the writer holds one
    tensor at a time).

    Attributes:
        shape: the array's shape.
        dtype: its numpy dtype.
        fresh: ``make`` returns a new array on every call (so a step may write into it).
    """

    def __init__(self, shape, dtype, make: Callable[[], np.ndarray], fresh: bool = True):
        self.shape, self.dtype, self._make = tuple(int(d) for d in shape), np.dtype(dtype), make
        self.fresh = fresh

    @classmethod
    def of(cls, a) -> "Deferred":
        """``a`` itself when deferred already, else a ``Deferred`` that returns the array ``a`` (as is: a read-only
        memory map of the export stays one until a step needs to write)."""
        return a if isinstance(a, Deferred) else cls(a.shape, a.dtype, lambda: a, fresh=False)

    def then(self, step: Callable[[np.ndarray], None]) -> "Deferred":
        """This value with ``step`` applied in place once it is made (shape and dtype unchanged): into the value
        where it is made anew on each read and C-contiguous, else into a copy (the array given to ``of``, a memory
        map of the export say, is never written through)."""
        make, fresh = self._make, self.fresh

        def made() -> np.ndarray:
            a = make()
            if not (fresh and a.flags.writeable and a.flags.c_contiguous):
                a = np.array(a, order="C")
            step(a)
            return a
        return Deferred(self.shape, self.dtype, made)

    def value(self) -> np.ndarray:
        """The array, made now (shape ``self.shape``, dtype ``self.dtype``).

        Raises:
            RuntimeError: the making step returned another shape or dtype (a bug).
        """
        a = np.asarray(self._make())
        if a.shape != self.shape or a.dtype != self.dtype:
            raise RuntimeError(f"deferred value made {a.dtype} {a.shape}, declared {self.dtype} {self.shape}")
        return a

    def __array__(self, dtype=None, copy=None):
        a = self.value()
        return a if dtype is None else a.astype(dtype, copy=False)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"Deferred({self.dtype} {list(self.shape)})"


def value_of(a) -> np.ndarray:
    """The array of a weight input's value, deferred or not."""
    return a.value() if isinstance(a, Deferred) else np.asarray(a)


def safetensors_header(arrays: dict, metadata: dict[str, str]) -> bytes:
    """The safetensors header for ``arrays`` (name -> array or ``Deferred``) stored in that order: 8 bytes of
    little-endian header length, then the JSON (padded with spaces to a multiple of 8 bytes, as safetensors' own
    writer pads it, so that every tensor starts aligned).

    Raises:
        ValueError: a dtype other than float16/float32.
    """
    header: dict = {"__metadata__": metadata}
    at = 0
    for name, a in arrays.items():
        dtype = np.dtype(a.dtype)
        if dtype not in _DTYPES:
            raise ValueError(f"weight input {name} is {dtype}; the weights file holds float16 or float32")
        n = int(a.nbytes)
        header[name] = {"dtype": _DTYPES[dtype], "shape": [int(d) for d in a.shape], "data_offsets": [at, at + n]}
        at += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


class _Stopped(Exception):
    """The build failed or was interrupted: the writer stops between tensors."""


class WeightFileWriter:
    """Writes ``weights.safetensors`` in a thread: each value made (``Deferred``), written and hashed, then freed.

    Use ``writing_weights``, which stops and joins the thread when the build fails.
    """

    def __init__(self, arrays: dict, directory: Path):
        from concurrent.futures import ThreadPoolExecutor

        from trtllm_kit.engine.weights import WEIGHTS_FILE

        self.path = Path(directory) / WEIGHTS_FILE
        self.seconds = 0.0  # how long the thread took to make, write and hash the file (known after ``result()``)
        self.shapes = {k: [int(d) for d in a.shape] for k, a in arrays.items()}
        self._arrays = dict(arrays)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="trtllm-kit-weights")
        self._future = self._pool.submit(self._write)

    def _write(self):
        from trtllm_kit.engine.weights import FORMAT_NOTE

        t0 = time.perf_counter()
        digest = hashlib.sha256()
        with open(self.path, "xb") as f:
            head = safetensors_header(self._arrays, {"format": FORMAT_NOTE})
            f.write(head)
            digest.update(head)
            size = len(head)
            for name in list(self._arrays):
                if self._stop.is_set():
                    raise _Stopped
                a = np.ascontiguousarray(value_of(self._arrays.pop(name)))  # (freed as soon as it is written)
                data = memoryview(a.reshape(-1).view(np.uint8))
                f.write(data)
                digest.update(data)
                size += len(data)
                del a, data
        return digest.hexdigest(), size, time.perf_counter() - t0

    def result(self):
        """Wait for the file; returns its ``WeightInputsRecord``.

        Raises:
            OSError: the file could not be written (the disk full, say).
        """
        from trtllm_kit.engine.weights import WEIGHTS_FILE, WeightInputsRecord
        from trtllm_kit.utils.units import size

        try:
            sha, nbytes, self.seconds = self._future.result()
        finally:
            self._pool.shutdown(wait=True)
        log.info("weight inputs written: %s in %.1f s (beside TensorRT's build)", size(nbytes), self.seconds)
        return WeightInputsRecord(file=WEIGHTS_FILE, sha256=sha, bytes=nbytes, tensors=self.shapes)

    def stop(self) -> None:
        """Stop after the tensor being written and wait for the thread (what it wrote is left to the caller's
        temporary directory)."""
        self._stop.set()
        self._pool.shutdown(wait=True)


@contextmanager
def writing_weights(arrays: dict, directory: Path) -> Iterator[WeightFileWriter]:
    """Start writing ``arrays`` (engine input name -> array or ``Deferred``) to ``directory/weights.safetensors`` in
    a thread; the block gets the writer (``result()`` waits for the file and gives its record). Leaving the block
    with an exception stops the thread and waits for it, so the caller's temporary directory can be removed.

    The file is a standard safetensors file (keys: the engine's input names; ``safetensors.torch.load_file`` reads
    it), its tensors in ``arrays``' order.
    """
    writer = WeightFileWriter(arrays, directory)
    try:
        yield writer
    finally:
        writer.stop()  # (a no-op once result() returned)
