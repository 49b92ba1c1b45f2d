"""What monitoring itself costs: time per forward and the device memory the monitor holds.

Time is taken around each recorded forward's monitoring work. On the CPU that work is done
when the call returns, so a clock suffices; on a GPU the work is only queued, so a pair of CUDA
events brackets it and their elapsed time is read later, at snapshot time, from the pairs that
have completed (`Event.query()` never waits). Neither reads anything back on the hot path.
"""

from __future__ import annotations

import time
from collections import deque

import torch

# Event pairs waiting to be read; older ones are read (or dropped) first.
_MAX_PENDING = 256


class CostMeter:
    """Milliseconds of monitoring per forward: the total, the count and the last one."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the measurements."""
        self.total_ms = 0.0
        self.measured = 0
        self.last_ms: float | None = None
        self._pending: deque[tuple[torch.cuda.Event, torch.cuda.Event]] = deque()
        self._started: float | torch.cuda.Event | None = None

    def start(self, device: torch.device) -> None:
        """Before a forward's monitoring work on `device`."""
        if device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._started = event
        else:
            self._started = time.perf_counter()

    def stop(self) -> None:
        """After it (a failed call is not measured: `stop` is not reached)."""
        started, self._started = self._started, None
        if isinstance(started, float):
            self._add((time.perf_counter() - started) * 1000.0)
        elif started is not None:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._pending.append((started, end))
            while len(self._pending) > _MAX_PENDING:
                self._pending.popleft()

    def harvest(self) -> None:
        """Read the GPU event pairs that have completed (call at snapshot time)."""
        while self._pending and self._pending[0][1].query():
            begin, end = self._pending.popleft()
            self._add(begin.elapsed_time(end))

    def mean_ms(self) -> float | None:
        """Mean milliseconds per measured forward."""
        self.harvest()
        return self.total_ms / self.measured if self.measured else None

    def _add(self, ms: float) -> None:
        self.total_ms += ms
        self.measured += 1
        self.last_ms = ms
