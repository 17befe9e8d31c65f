"""Timing rules, in one place: CUDA events on the GPU, perf_counter on the CPU, sync inside the region."""

from __future__ import annotations

import time

import torch


def device_sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer:
    """Marks the start of a generation and the end of each step, then reports their durations.

    On CUDA it records events on the current stream (no host sync between steps, so the timer does not
    change what it measures) and synchronizes once in ``finish``. On the CPU it reads perf_counter.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.marks: list = []

    def _mark(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def start(self) -> None:
        device_sync(self.device)
        self.marks = [self._mark()]

    def step(self) -> None:
        self.marks.append(self._mark())

    def finish(self) -> tuple[float, list[float]]:
        """Synchronize; return (total seconds, seconds of each step)."""
        device_sync(self.device)
        if not self.marks:
            return 0.0, []
        if self.cuda:
            steps = [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
            total = self.marks[0].elapsed_time(self.marks[-1]) / 1e3
        else:
            steps = [b - a for a, b in zip(self.marks, self.marks[1:])]
            total = self.marks[-1] - self.marks[0]
        return total, steps
