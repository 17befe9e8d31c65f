"""KV-cache buffers on the runtime side, one class per cache shape.

``PingPongCache`` serves graphs with a growing cache (the portable layout, ONNX Runtime): two flat
buffers per cache tensor; each step reads a contiguous (B, kv_heads, past, head_dim) view of one and
writes the (B, kv_heads, past + new, head_dim) ``present`` into the other, so ``present`` of one step
is ``past`` of the next with no copy. ``StaticCache`` serves the in-place layouts: one preallocated
(B, kv_heads, max_seq, head_dim) buffer per cache tensor, bound as both input and (aliased) output.
``NewRowsCache`` serves the portable-static layout: one (B, kv_heads, capacity, head_dim) buffer per cache
tensor, bound whole as the past of every decode step (a prefill binds one masked position); the engine returns
the new rows, copied in after.
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

    Every decode step binds the whole buffer as the past (the same shape and address every step: positions not yet
    written are masked out by the caller); a prefill, with nothing cached, binds one zeroed position, so it reads
    no cache it cannot use (and an attention written as broadcast products stays the cache's size). A prefill's S
    rows are copied to positions 0..S-1; a decode step's one row goes to position ``past_len``, through a
    device-side index so that a captured CUDA graph replays the copy too. The buffers start zeroed: a masked
    position's weight is exactly 0, and 0 times an uninitialised NaN would not be.

    Args:
        spec: per-layer KV heads and head dims.
        batch: sequences. capacity: the longest past a decode step reads. max_new: the most rows one step returns
            (the longest prompt).
        values_transposed: the value caches are (B, nkv, hd, capacity) and a step returns its values as
            (B, nkv, hd, new) (``split-vt`` and ``reduce-vt`` engines; split-vt is
            portable-static's default).
    """

    def __init__(self, spec: ModelSpec, batch: int, capacity: int, max_new: int, dtype: torch.dtype,
                 device: torch.device, values_transposed: bool = False):
        self.spec, self.batch, self.capacity = spec, batch, capacity
        self.transposed = {kv: values_transposed and kv == "value" for kv in KV}
        max_new = max(max_new, 1)
        # The cache tensors of one shape are slices of one buffer, and so are their new rows, so that a decode step
        # writes every such row with one copy (64 copies of one row each were 0.14 ms of a llama-7b batch-1 step on
        # the H200, thirteenth session's kernel profiles).
        shapes: dict[tuple[int, int, bool], list] = {}
        for i, layer in enumerate(spec.layers):
            for kv in KV:
                shapes.setdefault((layer.n_kv_heads, layer.head_dim, self.transposed[kv]), []).append((i, kv))
        self.buffers, self.rows, self.groups = {}, {}, []
        for (nkv, hd, t), keys in shapes.items():
            n, size = len(keys), (batch, nkv, hd, capacity) if t else (batch, nkv, capacity, hd)
            slot = _aligned(batch * nkv * capacity * hd)  # each tensor 256-byte aligned, as TensorRT binds it
            flat = torch.zeros(n * slot, dtype=dtype, device=device)
            cache = flat.as_strided((n, *size), (slot, nkv * capacity * hd, size[2] * size[3], size[3], 1))
            rows = torch.empty(n, _aligned(batch * nkv * max_new * hd), dtype=dtype, device=device)
            for j, key in enumerate(keys):
                self.buffers[key], self.rows[key] = cache[j], rows[j]
            self.groups.append((cache, rows, t))
        self.index = torch.zeros(1, dtype=torch.long, device=device)  # where a decode step's row goes
        # what a prefill binds as its past: one zeroed position per layer shape (masked out by the caller)
        self.empty = {(nkv, hd): torch.zeros(batch, nkv, 1, hd, dtype=dtype, device=device) for nkv, hd, _ in shapes}
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
        B, nkv = self.buffers[key].shape[:2]
        hd = self.spec.layers[key[0]].head_dim
        shape = (B, nkv, hd, new) if self.transposed[key[1]] else (B, nkv, new, hd)
        return self.rows[key][:B * nkv * new * hd].view(shape)

    def views(self, new: int) -> Iterator[CacheView]:
        """Bindings of this step: past (B, nkv, capacity, hd), or at a prefill (nothing cached) one zeroed position
        (B, nkv, 1, hd); present (B, nkv, new, hd); values with their last two axes swapped where transposed."""
        for (i, kv), buf in self.buffers.items():
            layer = self.spec.layers[i]
            past = buf
            if not self.past_len:
                past = self.empty[layer.n_kv_heads, layer.head_dim]
                past = past.view(past.shape[0], past.shape[1], past.shape[3], 1) if self.transposed[kv] else past
            yield CacheView(past_name(i, kv), present_name(i, kv), past, self._rows((i, kv), new))

    def advance(self, new: int) -> None:
        """After a step: its rows into the cache (a decode step's at the device-side index, so it can be captured:
        one copy per layer shape)."""
        if self.past_len and new == 1:
            for cache, rows, t in self.groups:
                n, B, nkv = cache.shape[:3]
                hd = cache.shape[3] if t else cache.shape[4]
                shape = (n, B, nkv, hd, 1) if t else (n, B, nkv, 1, hd)
                one = rows.as_strided(shape, (rows.stride(0), nkv * hd, hd, 1, 1) if t else
                                      (rows.stride(0), nkv * hd, hd, hd, 1))
                cache.index_copy_(4 if t else 3, self.index, one)
            return
        for (i, kv), buf in self.buffers.items():
            rows = self._rows((i, kv), new)
            if self.transposed[kv]:
                buf[..., self.past_len:self.past_len + new].copy_(rows)
            else:
                buf[:, :, self.past_len:self.past_len + new].copy_(rows)


def _aligned(elements: int) -> int:
    """``elements`` rounded up to a multiple of 128, so that consecutive slices of that many 2- or 4-byte elements
    keep the 256-byte alignment TensorRT asks of a bound tensor."""
    return -(-elements // 128) * 128
