"""`close()` is final: when it returns no snapshot subscriber, state listener or watch callback
runs any more (it waits for one in progress), and a callback that closes the monitor itself does
not deadlock."""

import gc
import threading
import weakref

import torch
from virtual_time import ManualClock

from featmon_widget import FeatureMonitor
from featmon_widget.live import clock as live_clock


def test_close_waits_for_a_slow_subscriber_and_nothing_runs_after_it():
    """close() gave up on the delivery thread after 1 s; the subscribers after a slow one were
    still called once it returned."""
    monitor = FeatureMonitor(8, compile=False, throttle_ms=0)
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()
    late: list[str] = []

    def slow(snapshot):
        entered.set()
        release.wait(30)
        if returned.is_set():
            late.append("slow")

    def record(snapshot):
        if returned.is_set():
            late.append("subscriber")

    def close():
        monitor.close()
        returned.set()

    monitor.subscribe(record)
    monitor.subscribe(slow)
    for _ in range(3):
        monitor.subscribe(record)
    assert entered.wait(30)  # the delivery thread is inside the slow callback
    closer = threading.Thread(target=close)
    closer.start()
    closer.join(1.5)  # longer than the old code waited for the thread
    waited = closer.is_alive()
    release.set()
    closer.join(30)
    assert not closer.is_alive()
    assert waited  # close() waited for the callback in progress
    monitor.on_activation(torch.rand(2, 8))
    assert late == []


def test_a_subscriber_may_close_the_monitor_from_the_delivery_thread(manual_clock):
    monitor = FeatureMonitor(8, compile=False, throttle_ms=0)
    after: list = []
    closing = threading.Event()
    with manual_clock.settled():
        monitor.subscribe(lambda snapshot: closing.is_set() and monitor.close())
    with manual_clock.settled():
        monitor.subscribe(after.append)
    closing.set()
    del after[:]
    with manual_clock.settled():
        monitor.on_activation(torch.rand(2, 8))
    assert after == [] and monitor._live.closed


def test_no_state_listener_runs_after_close():
    """A listener was still called by configure() on a closed monitor."""
    monitor = FeatureMonitor(8, compile=False)
    events: list[str] = []
    monitor.on_state_change(lambda event, state: events.append(event))
    monitor.configure(threshold=0.5)
    monitor.close()
    monitor.configure(threshold=0.25)
    assert events == ["configured"]


def test_an_unreferenced_monitor_with_watches_and_subscribers_is_collected(monkeypatch):
    """5 of 5 such monitors stayed alive with their threads: the delivery thread held the
    monitor. Now it holds only a weak reference, and the threads end once it is collected."""
    refs, threads = [], []
    for _ in range(5):
        # A clock per monitor: a settle then waits for this monitor's threads, not the last's.
        manual_clock = ManualClock()
        monkeypatch.setattr(live_clock, "DEFAULT", manual_clock)
        monitor = FeatureMonitor(8, compile=False, throttle_ms=0)
        hits: list = []
        with manual_clock.settled():
            watch = monitor.watch(1, above=-1.0, callback=hits.append)
            monitor.watch(2, above=-1.0)
            monitor.subscribe(lambda snapshot: None)
        with manual_clock.settled():
            monitor.on_activation(torch.rand(2, 8))
        assert len(hits) == 2  # the delivery thread and the watch's worker both ran
        threads += [monitor._live._throttle._thread, watch._worker._thread]
        refs.append(weakref.ref(monitor))
        del monitor, watch
    gc.collect()
    assert [r() for r in refs] == [None] * 5
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads)
