"""Leading- and trailing-edge throttling on a background thread.

`poke()` is cheap and never blocks on delivery: the hot path only sets a flag. A daemon thread
delivers at once when the last delivery is older than the interval (leading edge), otherwise when
the interval ends (trailing edge), so the state after a burst always arrives within one interval.
Time is read and waited for through a `Clock` (`live.clock`): the real one unless given another.
The thread holds the throttle (and so the monitor it delivers for) only weakly: a monitor
dropped without `close()` is collected, and its thread ends.

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


class _Timer:
    """The thread's side of a throttle: when a delivery is due. It holds nothing of what is
    delivered, so the thread keeps no monitor alive."""

    def __init__(self, interval_s: float, clock: Clock) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.cond = threading.Condition()
        self.pending = False
        self.closed = False
        self.last = float("-inf")

    def close(self) -> None:
        """End the thread at its next wake (at once if it waits)."""
        with self.cond:
            self.closed = True
            self.cond.notify()

    def await_turn(self) -> bool:
        """Wait until a delivery is due (True) or the throttle is closed (False)."""
        with self.cond:
            while not self.closed:
                if self.pending:
                    wait = self.last + self.interval_s - self.clock.monotonic()
                    if wait <= 0:
                        break
                    # A timed wait takes at most about 49 days; wake at least hourly.
                    self.clock.wait(self.cond, min(wait, _MAX_WAIT_S))
                else:
                    self.clock.wait(self.cond, None)
            if self.closed:
                return False
            self.pending = False
            self.last = self.clock.monotonic()
            return True


class Throttle:
    """Calls `deliver()` at most once per `interval_s`, and always after the last `poke()`;
    time is `clock`'s (default `clock.default_clock()`, the real one). Its thread holds it only
    weakly: a throttle nobody holds is collected and its thread ends."""

    def __init__(self, deliver: Callable[[], None], interval_s: float,
                 clock: Clock | None = None) -> None:
        self._deliver = deliver
        self._timer = _Timer(interval_s, clock if clock is not None else default_clock())
        self._thread: threading.Thread | None = None
        weakref.finalize(self, self._timer.close)

    @property
    def interval_s(self) -> float:
        """Minimum time between deliveries."""
        return self._timer.interval_s

    @interval_s.setter
    def interval_s(self, value: float) -> None:
        with self._timer.cond:
            self._timer.interval_s = value
            self._timer.cond.notify()

    def poke(self) -> None:
        """Ask for a delivery; starts the thread on first use."""
        timer = self._timer
        with timer.cond:
            if timer.closed:
                return
            timer.pending = True
            if self._thread is None:
                self._thread = threading.Thread(
                    target=_run, args=(weakref.ref(self), timer), name="featmon-throttle",
                    daemon=True)
                self._thread.start()
                _running.add(self)
            timer.cond.notify()

    def close(self, timeout: float = 1.0) -> None:
        """Stop the thread; pending deliveries are dropped."""
        self._timer.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


def _run(throttle_ref: weakref.ref[Throttle], timer: _Timer) -> None:
    """The thread: deliver when due, until the throttle is closed or collected."""
    while True:
        try:
            if not timer.await_turn():
                return
        except Exception as exc:  # the thread must outlive anything: report, go on
            warnings.warn(f"featmon_widget: snapshot timer failed: {exc!r}",
                          RuntimeWarning, stacklevel=1)
            time.sleep(0.05)
            continue
        throttle = throttle_ref()
        if throttle is None:
            return
        try:
            throttle._deliver()
        except Exception as exc:  # a broken subscriber must not kill later deliveries
            warnings.warn(f"featmon_widget: snapshot delivery failed: {exc!r}",
                          RuntimeWarning, stacklevel=1)
        del throttle  # hold it only while delivering


@atexit.register
def _close_all() -> None:
    for throttle in list(_running):
        throttle.close(_EXIT_JOIN_S)
