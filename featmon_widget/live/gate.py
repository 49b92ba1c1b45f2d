"""The gate every user callback of a monitor passes through: after `close()` none runs.

A snapshot subscriber, a state listener or a watch callback is started with `gate.run(fn, ...)`,
which refuses once the gate is closed. `close()` shuts the gate and then waits for the callbacks
already running on other threads to return, so when it returns no callback of the monitor runs
or will run. A callback that closes the monitor itself (from the delivery thread, a watch's
worker or the caller of `configure`) is not waited for: it is the caller. The callbacks' own threads
(`live.worker`) attached to the gate are stopped by `close()` too.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any

# How long close() waits for a running callback before it says what it is waiting for (it
# keeps waiting: returning earlier would break its promise).
SLOW_CLOSE_S = 5.0


class CallbackGate:
    """Runs callbacks until closed; `close()` waits for the running ones (see module doc)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._closed = False
        self._running: dict[int, int] = {}  # thread ident -> callbacks it is inside
        self._workers: weakref.WeakSet[Any] = weakref.WeakSet()  # stopped by close()

    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
        return self._closed

    def attach(self, worker: Any) -> None:
        """Call `worker.stop()` at `close()` (a callback's own thread; held weakly)."""
        with self._cond:
            self._workers.add(worker)

    def run(self, fn: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        """`(True, fn(*args))`, or `(False, None)` without calling it once closed; what `fn`
        raises passes through."""
        me = threading.get_ident()
        with self._cond:
            if self._closed:
                return False, None
            self._running[me] = self._running.get(me, 0) + 1
        try:
            return True, fn(*args)
        finally:
            with self._cond:
                left = self._running[me] - 1
                if left:
                    self._running[me] = left
                else:
                    del self._running[me]
                    self._cond.notify_all()

    def close(self) -> None:
        """Refuse every later callback, then wait until none runs on another thread."""
        me = threading.get_ident()
        warned = False
        with self._cond:
            self._closed = True
            while any(ident != me for ident in self._running):
                if not self._cond.wait(SLOW_CLOSE_S) and not warned:
                    warned = True
                    warnings.warn("featmon_widget: close() is waiting for a callback that is "
                                  "still running (a snapshot subscriber, state listener or "
                                  "watch callback)", RuntimeWarning, stacklevel=2)
            workers = list(self._workers)
        for worker in workers:  # idle now: their threads end
            worker.stop()
