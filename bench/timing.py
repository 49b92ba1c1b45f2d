"""Median wall time of a callable, warm-up excluded, synchronising the device if needed."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], repeat: int, warmup: int = 2,
                   device: torch.device | None = None) -> float:
    """Median of `repeat` timed calls after `warmup` untimed ones."""
    device = device or torch.device("cpu")
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
