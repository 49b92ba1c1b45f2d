"""The time source of live delivery: what `Throttle` reads and how it waits.

A throttle reads `monotonic()` and blocks in `wait(cond, timeout)`, and a watch's worker is
woken with `notify(cond)`; all go through a `Clock`,
so a test can pass one whose time moves only when the test says so (the leading edge, the
trailing edge and "at most once per interval" then hold exactly, with no sleeps). `SYSTEM` is
the real clock; a throttle made without a clock uses `default_clock()`.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds, and a wait on a held condition that a notify or a timeout ends."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        """Block on `cond` (held by the caller) until notified or `timeout` seconds passed
        (None: until notified). Callers re-check their state: a wake may be spurious."""
        ...

    def notify(self, cond: threading.Condition) -> None:
        """Wake every thread waiting on `cond` (held by the caller): work was handed to it."""
        ...


class SystemClock:
    """The real clock: `time.monotonic` and a timed `Condition.wait`."""

    def monotonic(self) -> float:
        """`time.monotonic()`."""
        return time.monotonic()

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        """`cond.wait(timeout)`."""
        cond.wait(timeout)

    def notify(self, cond: threading.Condition) -> None:
        """`cond.notify_all()`."""
        cond.notify_all()


SYSTEM = SystemClock()
# What a throttle made without a clock uses: the real clock. Read when the throttle is made, so
# a test may swap it (pytest's monkeypatch) to drive a monitor's delivery thread by hand.
DEFAULT: Clock = SYSTEM


def default_clock() -> Clock:
    """The clock for a throttle made without one (`DEFAULT`, normally the real clock)."""
    return DEFAULT
