"""Peak memory of a piece of work: the most bytes its tensors held at once, above what was allocated before it.

On CUDA this is the allocator's own peak counter. The CPU has none, so the CPU figure replays the allocation and
free events that torch's profiler records (``profile_memory=True``); it counts tensor memory only, not the Python
heap. The profiler slows the work down: measure memory and time in separate runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

R = TypeVar("R")


def peak_bytes(fn: Callable[[], R], device: torch.device | str = "cpu") -> tuple[int, R]:
    """(peak bytes allocated above the start while fn ran, fn's result)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start, result
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    return replay_peak([(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                        if e.name() == "[memory]"]), result


def replay_peak(events: list[tuple[int, int]]) -> int:
    """The highest running total of (time, +bytes allocated / -bytes freed) events, taken in time order.

    >>> replay_peak([(0, 100), (2, -100), (1, 50)])
    150
    """
    total = peak = 0
    for _, nbytes in sorted(events, key=lambda e: e[0]):
        total += nbytes
        peak = max(peak, total)
    return peak
