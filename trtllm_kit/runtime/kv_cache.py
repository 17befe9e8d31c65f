"""KV-cache buffers on the runtime side, one class per cache shape.

``PingPongCache`` serves graphs with a growing cache (the portable layout, ONNX Runtime): two flat
buffers per cache tensor; each step reads a contiguous (B, kv_heads, past, head_dim) view of one and
writes the (B, kv_heads, past + new, head_dim) ``present`` into the other, so ``present`` of one step
is ``past`` of the next with no copy. ``StaticCache`` serves the in-place layouts: one preallocated
(B, kv_heads, max_seq, head_dim) buffer per cache tensor, bound as both input and (aliased) output.
``NewRowsCache`` serves the portable-static layout: one (B, kv_heads, capacity, head_dim) buffer per cache
tensor, bound whole as the past of every decode step; the engine returns the new rows, copied in after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from trtllm_kit.export.io_spec import KV, past_name, present_name
from trtllm_kit.models.spec import ModelSpec


@dataclass(frozen=True)
class CacheView:
    """One cache tensor's binding for a step: names and the tensors to bind (present may alias past)."""

    past_name: str
    present_name: str
    past: torch.Tensor
    present: torch.Tensor


class PingPongCache:
    """Two flat buffers per cache tensor, swapped after every step.

    Args:
        spec: per-layer KV heads and head dims.
        batch: sequences. capacity: the longest past + new length a generation reaches.
    """

    def __init__(self, spec: ModelSpec, batch: int, capacity: int, dtype: torch.dtype, device: torch.device):
        self.spec, self.batch, self.capacity = spec, batch, capacity
        self.buffers = {(i, kv): [torch.empty(batch * layer.n_kv_heads * capacity * layer.head_dim, dtype=dtype,
                                              device=device) for _ in range(2)]
                        for i, layer in enumerate(spec.layers) for kv in KV}
        self.restart()

    def fits(self, batch: int, capacity: int, dtype: torch.dtype) -> bool:
        buf = next(iter(self.buffers.values()))[0]
        return batch == self.batch and capacity <= self.capacity and buf.dtype == dtype

    def restart(self) -> None:
        """A new generation: nothing cached."""
        self.flip, self.past_len = 0, 0

    def views(self, new: int) -> Iterator[CacheView]:
        """Bindings of this step: past (B, nkv, past_len, hd) and present (B, nkv, past_len + new, hd)."""
        B, P = self.batch, self.past_len
        for (i, kv), bufs in self.buffers.items():
            layer = self.spec.layers[i]
            src, dst = bufs[self.flip], bufs[1 - self.flip]
            n_past, n_present = B * layer.n_kv_heads * P * layer.head_dim, B * layer.n_kv_heads * (P + new) * layer.head_dim
            yield CacheView(past_name(i, kv), present_name(i, kv),
                            src[:n_past].view(B, layer.n_kv_heads, P, layer.head_dim),
                            dst[:n_present].view(B, layer.n_kv_heads, P + new, layer.head_dim))

    def advance(self, new: int) -> None:
        """After a step that appended ``new`` tokens: the present buffer becomes the past."""
        self.flip, self.past_len = 1 - self.flip, self.past_len + new


class StaticCache:
    """One (B, nkv, max_seq, hd) buffer per cache tensor, updated in place by the engine."""

    def __init__(self, spec: ModelSpec, batch: int, max_seq: int, dtype: torch.dtype, device: torch.device):
        self.spec, self.batch, self.max_seq = spec, batch, max_seq
        self.buffers = {(i, kv): torch.empty(batch, layer.n_kv_heads, max_seq, layer.head_dim, dtype=dtype, device=device)
                        for i, layer in enumerate(spec.layers) for kv in KV}

    def fits(self, batch: int, capacity: int, dtype: torch.dtype) -> bool:
        buf = next(iter(self.buffers.values()))
        return batch == self.batch and capacity <= self.max_seq and buf.dtype == dtype

    def restart(self) -> None:
        """A new generation: stale entries are masked out by the attention mask, nothing to clear."""

    def views(self, new: int) -> Iterator[CacheView]:
        for (i, kv), buf in self.buffers.items():
            yield CacheView(past_name(i, kv), present_name(i, kv), buf, buf)

    def advance(self, new: int) -> None:
        pass


class NewRowsCache:
    """One (B, nkv, capacity, hd) buffer per cache tensor that the engine reads, and the new rows it returns.

    Every step binds the whole buffer as the past (the same shape and address every step: positions not yet
    written are masked out by the caller). A prefill's S rows are copied to positions 0..S-1; a decode step's
    one row goes to position ``past_len``, through a device-side index so that a captured CUDA graph replays the
    copy too. The buffers start zeroed: a masked position's weight is exactly 0, and 0 times
    an uninitialised NaN would not be.

    Args:
        spec: per-layer KV heads and head dims.
        batch: sequences. capacity: the longest past a decode step reads. max_new: the most rows one step returns
            (the longest prompt).
    """

    def __init__(self, spec: ModelSpec, batch: int, capacity: int, max_new: int, dtype: torch.dtype,
                 device: torch.device):
        self.spec, self.batch, self.capacity = spec, batch, capacity
        self.buffers = {(i, kv): torch.zeros(batch, layer.n_kv_heads, capacity, layer.head_dim, dtype=dtype,
                                             device=device)
                        for i, layer in enumerate(spec.layers) for kv in KV}
        self.rows = {key: torch.empty(buf.shape[0] * buf.shape[1] * max(max_new, 1) * buf.shape[3], dtype=dtype,
                                      device=device) for key, buf in self.buffers.items()}
        self.index = torch.zeros(1, dtype=torch.long, device=device)  # where a decode step's row goes
        self.past_len = 0

    def fits(self, batch: int, capacity: int, dtype: torch.dtype) -> bool:
        buf = next(iter(self.buffers.values()))
        return batch == self.batch and capacity - 1 <= self.capacity and buf.dtype == dtype

    def restart(self) -> None:
        """A new generation: the caller's mask hides what the last one wrote."""
        self.past_len = 0

    def start(self, past_len: int) -> None:
        """The next step comes after ``past_len`` cached tokens (sets the decode row's device index)."""
        self.past_len = past_len
        if past_len:
            self.index.fill_(past_len)

    def _rows(self, key, new: int) -> torch.Tensor:
        B, nkv, _, hd = self.buffers[key].shape
        return self.rows[key][:B * nkv * new * hd].view(B, nkv, new, hd)

    def views(self, new: int) -> Iterator[CacheView]:
        """Bindings of this step: past (B, nkv, capacity, hd) and present (B, nkv, new, hd)."""
        for (i, kv), buf in self.buffers.items():
            yield CacheView(past_name(i, kv), present_name(i, kv), buf, self._rows((i, kv), new))

    def advance(self, new: int) -> None:
        """After a step: its rows into the cache (a decode step's at the device-side index, so it can be captured)."""
        for key, buf in self.buffers.items():
            rows = self._rows(key, new)
            if self.past_len and new == 1:
                buf.index_copy_(2, self.index, rows)
            else:
                buf[:, :, self.past_len:self.past_len + new].copy_(rows)
