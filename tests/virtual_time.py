"""A clock whose time moves only when a test says so, for the live-delivery thread.

`ManualClock` is a `featmon_widget.live.clock.Clock`: `monotonic()` is virtual time (starting at
0.0) and a throttle thread waiting on it stays blocked until virtual time reaches its deadline or
it is notified. `advance(seconds)` moves time and then returns only once every thread that
waits on this clock has reacted and is waiting again, so the deliveries that time made due have
happened by then (work one of them handed to another through `notify` included).
`settled()` does the same for anything else that wakes those threads (a poke,
an interval change): `with clock.settled(): throttle.poke()`.

Real time only bounds how long a test waits for a thread (SETTLE_S); it is never asserted on.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

# How long a test waits for the delivery thread to come back into its wait (a stuck thread
# fails the test instead of hanging it).
SETTLE_S = 30.0
# A waiting thread re-checks its state at least this often in real time (spurious wakes are
# harmless to a throttle, which re-reads its state on every wake).
_REAL_WAIT_S = 60.0


class ManualClock:
    """Virtual monotonic time for `Throttle` / `LiveDelivery` (see module doc)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Condition()
        self._conds: list[threading.Condition] = []  # every condition a thread waited on
        self._threads: set[threading.Thread] = set()  # every thread that waited here
        self._waiting: dict[threading.Thread, int] = {}  # thread -> epoch it started waiting
        self._waits_on: dict[threading.Thread, threading.Condition] = {}
        self._epoch = 0
        self.timeouts: list[float | None] = []  # every timeout a thread asked to wait for

    def monotonic(self) -> float:
        """The virtual time."""
        return self._now

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        """Block until notified (by a poke, a close, or `advance`/`settled`); `timeout` is in
        virtual seconds and may be at most what a real wait could take."""
        if timeout is not None and timeout > threading.TIMEOUT_MAX:
            raise OverflowError("timeout value is too large")  # as Condition.wait raises
        me = threading.current_thread()
        with self._lock:
            if cond not in self._conds:
                self._conds.append(cond)
            self._threads.add(me)
            self._waiting[me] = self._epoch
            self._waits_on[me] = cond
            self.timeouts.append(timeout)
            self._lock.notify_all()
        try:
            cond.wait(_REAL_WAIT_S)  # cond is the caller's, held: released while blocked
        finally:
            with self._lock:
                self._waiting.pop(me, None)
                self._waits_on.pop(me, None)
                self._lock.notify_all()

    def notify(self, cond: threading.Condition) -> None:
        """Wake the threads waiting on `cond` (held by the caller), counting them as busy at
        once: work handed to a waiting worker is done before a settle returns."""
        with self._lock:
            for thread, waited_on in list(self._waits_on.items()):
                if waited_on is cond:
                    self._waiting.pop(thread, None)
                    del self._waits_on[thread]
        cond.notify_all()

    def advance(self, seconds: float) -> None:
        """Move virtual time forward by `seconds`, then wait until every thread waiting on this
        clock has run what became due and is waiting again."""
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        with self._wake_all(expect_thread=False):
            self._now += seconds

    @contextlib.contextmanager
    def settled(self) -> Iterator[None]:
        """Run the block (which should wake the delivery thread: a poke, a close, an interval
        change, the first poke that starts it), then wait until every thread that waits on this
        clock is waiting again."""
        yield
        with self._wake_all(expect_thread=True):
            pass

    @contextlib.contextmanager
    def _wake_all(self, expect_thread: bool) -> Iterator[None]:
        # Holding every waiter's condition while time moves and the epoch turns means a wait
        # entered at the new epoch was decided after the change (a thread reads the time and
        # its state under its own condition, and registers its wait before releasing it).
        with self._lock:
            conds = list(self._conds)
        with contextlib.ExitStack() as held:
            for cond in conds:
                held.enter_context(cond)
            yield
            with self._lock:
                self._epoch += 1
                target = self._epoch
                started = [c for c in self._conds if c not in conds]  # first waits, just now
            for cond in conds:
                cond.notify_all()
        for cond in started:
            with cond:
                cond.notify_all()
        self._await_waiting(target, expect_thread)

    def _await_waiting(self, target: int, expect_thread: bool) -> None:
        """Until every live thread that waited here waits again, entered at epoch >= target
        (with `expect_thread`, and none has waited here yet, until one does)."""
        deadline = time.monotonic() + SETTLE_S
        with self._lock:
            while not self._all_waiting(target, expect_thread):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the delivery thread did not come back into its wait "
                                         f"within {SETTLE_S:.0f} s (stuck in a delivery?)")
                # Woken by every wait entry and exit; the short timeout notices a thread that
                # ended (a closed throttle) without waiting again.
                self._lock.wait(min(left, 0.01))

    def _all_waiting(self, target: int, expect_thread: bool) -> bool:
        if not self._threads:
            return not expect_thread
        return all(self._waiting.get(t, -1) >= target for t in self._threads if t.is_alive())
