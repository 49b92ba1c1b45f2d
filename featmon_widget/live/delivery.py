"""Live delivery: throttled snapshots to subscribers, and state-change events.

The hot path only `poke()`s; a background thread (`Throttle`) builds one snapshot per distinct
set of options and hands it to every subscriber that asked for those options.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable

from ..snapshot.options import SnapshotOptions
from ..snapshot.schemas import Snapshot
from ..types import MonitorState
from .clock import Clock, default_clock
from .gate import CallbackGate
from .subscriptions import Subscription, short_error
from .throttle import Throttle

SnapshotCallback = Callable[[Snapshot], None]
EventCallback = Callable[[str, MonitorState], None]


class LiveDelivery:
    """Snapshot subscriptions and event callbacks of one monitor.

    `build(options)` makes a snapshot and `state()` reads the current state; both are the
    monitor's, called from the delivery thread or after an operation, never with a lock held
    here. `clock` is the delivery thread's time source (default: the real clock, see
    `live.clock`).
    """

    def __init__(self, build: Callable[[SnapshotOptions], Snapshot],
                 state: Callable[[], MonitorState], interval_s: float,
                 clock: Clock | None = None) -> None:
        self._build = build
        self._state = state
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._subscribers: list[Subscription] = []
        self._listeners: list[EventCallback] = []
        self._tasks: list[Callable[[], None]] = []  # run on every delivery (watch callbacks)
        self._throttle: Throttle | None = None
        self.errors = 0  # failed snapshot builds and subscriber callbacks that raised
        self.last_error: str | None = None
        self._closed = False
        # Every user callback passes through it: none runs after close() returns.
        self.gate = CallbackGate()
        self._build_failures = 0  # warned about once; every one is counted in `errors`
        self._task_failures = 0

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        """The active snapshot subscriptions."""
        with self._lock:
            return tuple(self._subscribers)

    def set_interval(self, interval_s: float) -> None:
        """Deliver at most once per `interval_s` from now on."""
        with self._lock:
            self._interval_s = interval_s
            throttle = self._throttle
        if throttle is not None:
            throttle.interval_s = interval_s

    @property
    def clock(self) -> Clock:
        """The time source of this delivery's threads (and of the watches' workers)."""
        return self._clock if self._clock is not None else default_clock()

    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
        return self._closed

    def check_open(self) -> None:
        """A RuntimeError after `close()`: nothing would ever be delivered."""
        if self._closed:
            raise RuntimeError("this monitor is closed: it delivers nothing any more "
                               "(make a new FeatureMonitor)")

    def subscribe(self, callback: SnapshotCallback, options: SnapshotOptions) -> Subscription:
        """Add a subscriber and deliver to it soon (starts the delivery thread). After
        `close()` a RuntimeError: nothing would ever be delivered."""
        sub = Subscription(callback, options, cancel=self._unsubscribe, poke=self.poke)
        with self._lock:
            self.check_open()
            self._subscribers.append(sub)
            if self._throttle is None:
                self._throttle = Throttle(self._deliver, self._interval_s, self._clock)
        self.poke()
        return sub

    def add_task(self, task: Callable[[], None]) -> None:
        """Run `task()` on the delivery thread at every delivery (at most every interval, and
        after the last change of a burst), before the snapshots; starts the thread."""
        with self._lock:
            self.check_open()
            self._tasks.append(task)
            if self._throttle is None:
                self._throttle = Throttle(self._deliver, self._interval_s, self._clock)
        self.poke()

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    def listen(self, callback: EventCallback) -> Callable[[], None]:
        """Call `callback(event, state)` on every `emit`; returns the function that stops it.
        After `close()` a RuntimeError, and nothing is registered."""
        with self._lock:
            self.check_open()
            self._listeners.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)
        return unsubscribe

    def poke(self) -> None:
        """Something changed: deliver soon (cheap; never waits for a delivery)."""
        throttle = self._throttle
        if throttle is not None:
            throttle.poke()

    def emit(self, event: str) -> None:
        """Tell the event listeners about `event` with the state now, and deliver soon."""
        with self._lock:
            listeners = list(self._listeners)
        if listeners:
            state = self._state()
            for callback in listeners:
                if not self.gate.run(callback, event, state)[0]:
                    return  # closed meanwhile
        self.poke()

    def close(self) -> None:
        """Stop the delivery thread for good. When it returns no callback (subscriber, listener,
        watch callback) runs any more: it waits for those running on other threads."""
        with self._lock:
            self._closed = True
            throttle = self._throttle
        self.gate.close()
        if throttle is not None:
            throttle.close()

    def _deliver(self) -> None:
        with self._lock:
            tasks = list(self._tasks)
        for task in tasks:
            try:
                if not self.gate.run(task)[0]:
                    return  # closed
            except Exception as exc:  # reported (warned once); snapshots are still delivered
                self._task_failures += 1
                self._report(f"a delivery task failed ({short_error(exc)})",
                             warn=self._task_failures == 1)
        built: dict[SnapshotOptions, Snapshot | None] = {}  # one build per distinct option set
        for sub in self.subscriptions:
            if self.gate.closed:
                return
            options = sub.options()
            if options not in built:
                built[options] = self._build_or_report(options)
            snapshot = built[options]
            # Options changed while it was built (a command): the caller pushes its own fresh
            # snapshot, which this stale one must not overwrite.
            if snapshot is None or sub.options() != options:
                continue
            ran, delivered = self.gate.run(sub.deliver, snapshot)
            if ran and not delivered:
                self._report(f"a snapshot subscriber failed ({sub.last_error})",
                             warn=sub.errors == 1)

    def _build_or_report(self, options: SnapshotOptions) -> Snapshot | None:
        try:
            return self._build(options)
        except Exception as exc:  # reported; the other option sets are still delivered
            self._build_failures += 1
            self._report(f"a snapshot could not be built ({short_error(exc)})",
                         warn=self._build_failures == 1)
            return None

    def _report(self, message: str, warn: bool) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = message
        if warn:  # once per subscriber, not once per delivery
            warnings.warn(f"featmon_widget: {message}; other subscribers still receive "
                          "snapshots", RuntimeWarning, stacklevel=2)
