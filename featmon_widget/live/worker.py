"""A callback's own thread and bounded queue, so a slow callback only delays itself.

The delivery thread `put`s items (a watch's hits) and goes on at once; the worker calls the
callback with each, oldest first, through the monitor's `CallbackGate` (so none runs after
`close()`). At most `limit` items wait: what does not fit is counted in `overflow`, never
hidden. A callback that raises is counted (`errors`, `last_error`) and warned about once; the
next item is still handed over. The worker holds no reference to the monitor or the watch: an
unreferenced watch stops it (`stop`, from its finalizer) and the thread ends.
"""

from __future__ import annotations

import threading
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ..checks import cut
from .clock import Clock, default_clock
from .gate import CallbackGate

_START_S = 30.0  # how long `put` waits for a new worker thread to be ready (real seconds)


class CallbackWorker:
    """Calls `callback(item)` on its own thread for every item `put` (see module doc); the
    first failure warns with `warning` (followed by the error)."""

    def __init__(self, callback: Callable[[Any], None], gate: CallbackGate, limit: int,
                 warning: str, clock: Clock | None = None, name: str = "featmon-watch") -> None:
        self._callback = callback
        self._gate = gate
        self._limit = limit
        self._warning = warning
        self._clock = clock if clock is not None else default_clock()
        self._name = name
        self._cond = threading.Condition()
        self._queue: deque[Any] = deque()
        self._thread: threading.Thread | None = None
        self._ready = False
        self._finishing = False  # end once the queue is empty
        self._stopped = False  # end now
        self.overflow = 0  # items that did not fit in the queue
        self.called = 0  # items handed to the callback
        self.errors = 0  # calls that raised
        self.last_error: str | None = None
        gate.attach(self)

    def put(self, items: Sequence[Any]) -> None:
        """Queue `items` (oldest first) and return at once; what does not fit is counted in
        `overflow`. Starts the thread on first use."""
        if not items:
            return
        with self._cond:
            if self._stopped:
                return
            self._start()
            room = max(0, self._limit - len(self._queue))
            self._queue.extend(items[:room])
            self.overflow += max(0, len(items) - room)
            self._clock.notify(self._cond)

    def finish(self) -> None:
        """End the thread once every queued item was handed over."""
        with self._cond:
            self._finishing = True
            self._clock.notify(self._cond)

    def stop(self, timeout: float = 1.0) -> None:
        """End the thread now; queued items are not handed over (the monitor is closed or
        the watch was collected)."""
        with self._cond:
            self._stopped = True
            self._queue.clear()
            self._clock.notify(self._cond)
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _start(self) -> None:
        # Called with the condition held. Returns once the thread waits for work, so an item
        # put now wakes a waiting worker (which a virtual clock then counts as busy).
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        self._cond.wait_for(lambda: self._ready, _START_S)

    def _next(self) -> tuple[bool, Any]:
        with self._cond:
            if not self._ready:
                self._ready = True
                self._cond.notify_all()  # `_start` waits for this (released by the wait below)
            while not self._queue and not self._stopped and not self._finishing:
                self._clock.wait(self._cond, None)
            if self._stopped or not self._queue:
                return False, None
            return True, self._queue.popleft()

    def _run(self) -> None:
        while True:
            more, item = self._next()
            if not more or not self._gate.run(self._call, item)[0]:
                return

    def _call(self, item: Any) -> None:
        self.called += 1
        try:
            self._callback(item)
        except Exception as exc:  # the user's callback: isolate it, count it, warn once
            self.errors += 1
            self.last_error = cut(f"{type(exc).__name__}: {exc}", 200)
            if self.errors == 1:
                warnings.warn(f"{self._warning} ({self.last_error})", RuntimeWarning,
                              stacklevel=2)
