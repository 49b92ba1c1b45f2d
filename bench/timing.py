"""Median wall times, measured round-robin so that machine noise hits every case alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(fns: Sequence[Callable[[], object]], repeat: int, warmup: int = 2,
                        device: torch.device | None = None) -> list[float]:
    """Median seconds of each callable; each round times every callable once, in turn."""
    device = device or torch.device("cpu")
    for _ in range(warmup):
        for fn in fns:
            fn()
    _sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def median_seconds(fn: Callable[[], object], repeat: int, warmup: int = 2,
                   device: torch.device | None = None) -> float:
    """Median of `repeat` timed calls after `warmup` untimed ones."""
    return interleaved_medians([fn], repeat, warmup, device)[0]
