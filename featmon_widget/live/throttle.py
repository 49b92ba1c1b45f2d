"""Leading- and trailing-edge throttling on a background thread.

`poke()` is cheap and never blocks on delivery: the hot path only sets a flag. A daemon thread
delivers at once when the last delivery is older than the interval (leading edge), otherwise when
the interval ends (trailing edge), so the state after a burst always arrives within one interval.
Time is read and waited for through a `Clock` (`live.clock`): the real one unless given another.

At interpreter exit every running throttle is closed and its thread joined first: a daemon
thread still inside a snapshot build (torch's C++ code) while the interpreter tears down
aborted the process ("terminate called without an active exception", exit code 134).
"""

from __future__ import annotations

import atexit
import threading
import time
import warnings
import weakref
from collections.abc import Callable

from .clock import Clock, default_clock

_MAX_WAIT_S = 3600.0
# How long exit waits for a delivery in progress to finish.
_EXIT_JOIN_S = 5.0
_running: weakref.WeakSet[Throttle] = weakref.WeakSet()


class Throttle:
    """Calls `deliver()` at most once per `interval_s`, and always after the last `poke()`;
    time is `clock`'s (default `clock.default_clock()`, the real one)."""

    def __init__(self, deliver: Callable[[], None], interval_s: float,
                 clock: Clock | None = None) -> None:
        self._deliver = deliver
        self._interval_s = interval_s
        self._clock = clock if clock is not None else default_clock()
        self._cond = threading.Condition()
        self._pending = False
        self._closed = False
        self._last = float("-inf")
        self._thread: threading.Thread | None = None

    @property
    def interval_s(self) -> float:
        """Minimum time between deliveries."""
        return self._interval_s

    @interval_s.setter
    def interval_s(self, value: float) -> None:
        with self._cond:
            self._interval_s = value
            self._cond.notify()

    def poke(self) -> None:
        """Ask for a delivery; starts the thread on first use."""
        with self._cond:
            if self._closed:
                return
            self._pending = True
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="featmon-throttle", daemon=True
                )
                self._thread.start()
                _running.add(self)
            self._cond.notify()

    def close(self, timeout: float = 1.0) -> None:
        """Stop the thread; pending deliveries are dropped."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                if not self._await_turn():
                    return
            except Exception as exc:  # the thread must outlive anything: report, go on
                warnings.warn(f"featmon_widget: snapshot timer failed: {exc!r}",
                              RuntimeWarning, stacklevel=1)
                time.sleep(0.05)
                continue
            try:
                self._deliver()
            except Exception as exc:  # a broken subscriber must not kill later deliveries
                warnings.warn(f"featmon_widget: snapshot delivery failed: {exc!r}",
                              RuntimeWarning, stacklevel=1)

    def _await_turn(self) -> bool:
        """Wait until a delivery is due (True) or the throttle is closed (False)."""
        with self._cond:
            while not self._closed:
                if self._pending:
                    wait = self._last + self._interval_s - self._clock.monotonic()
                    if wait <= 0:
                        break
                    # A timed wait takes at most about 49 days; wake at least hourly.
                    self._clock.wait(self._cond, min(wait, _MAX_WAIT_S))
                else:
                    self._clock.wait(self._cond, None)
            if self._closed:
                return False
            self._pending = False
            self._last = self._clock.monotonic()
            return True


@atexit.register
def _close_all() -> None:
    for throttle in list(_running):
        throttle.close(_EXIT_JOIN_S)
