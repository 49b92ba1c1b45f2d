"""`close()` is final: when it returns no snapshot subscriber, state listener or watch callback
runs any more (it waits for one in progress), and a callback that closes the monitor itself does
not deadlock."""

import threading

import torch

from featmon_widget import FeatureMonitor


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
