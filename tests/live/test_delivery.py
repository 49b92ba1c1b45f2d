"""One broken subscriber or snapshot build must not stop the others, and the delivery thread
survives an interval no timed wait can take."""

import threading
import warnings

import pytest
import torch
from virtual_time import ManualClock

from featmon_widget import FeatureMonitor
from featmon_widget.live.delivery import LiveDelivery
from featmon_widget.live.throttle import Throttle
from featmon_widget.snapshot.options import snapshot_options


def test_a_raising_subscriber_does_not_stop_the_ones_after_it(manual_clock):
    monitor = FeatureMonitor(8, throttle_ms=0)
    got = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with manual_clock.settled():
            monitor.subscribe(lambda snap: 1 / 0)
        with manual_clock.settled():
            monitor.subscribe(got.append)
        for _ in range(3):  # one delivery per forward: the interval is 0
            with manual_clock.settled():
                monitor.on_activation(torch.rand(2, 8))
    assert len(got) == 4  # the subscription's first snapshot, and one per forward
    state = monitor.state
    assert state.delivery_errors == 5  # every delivery to the raising subscriber
    assert "ZeroDivisionError" in state.last_delivery_error
    ours = [w for w in caught if "subscriber failed" in str(w.message)]
    assert len(ours) == 1  # warned once for that subscriber, counted every time
    monitor.close()


def test_a_raising_subscriber_on_the_real_clock_does_not_stop_the_others():
    """The same on the real delivery thread: only that snapshots keep arriving is checked."""
    monitor = FeatureMonitor(8, throttle_ms=0)
    arrived = threading.Semaphore(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monitor.subscribe(lambda snap: 1 / 0)
        monitor.subscribe(lambda snap: arrived.release())
        assert arrived.acquire(timeout=10)
        for _ in range(3):
            monitor.on_activation(torch.rand(2, 8))
            assert arrived.acquire(timeout=10)
    assert monitor.state.delivery_errors >= 2
    monitor.close()


def test_a_failing_build_is_reported_and_other_option_sets_still_delivered():
    def build(options):
        if options.table_rows == 7:
            raise RuntimeError("no snapshot for you")
        return options

    clock = ManualClock()
    delivery = LiveDelivery(build, lambda: None, 0.0, clock)
    got = []
    with pytest.warns(RuntimeWarning, match="could not be built"):
        with clock.settled():
            delivery.subscribe(lambda snap: None, snapshot_options(7, "mean", 5))
        with clock.settled():
            delivery.subscribe(got.append, snapshot_options(5, "mean", 5))
        delivery.close()
    assert got == [snapshot_options(5, "mean", 5)]
    assert delivery.errors == 2 and "no snapshot for you" in delivery.last_error


def test_tasks_run_before_the_snapshots_on_every_delivery():
    clock = ManualClock()
    order: list[str] = []
    delivery = LiveDelivery(lambda options: order.append("build") or options, lambda: None,
                            0.5, clock)
    with clock.settled():
        delivery.subscribe(lambda snap: order.append("snapshot"), snapshot_options(5, "mean", 5))
    with clock.settled():
        delivery.add_task(lambda: order.append("task"))  # pending until the interval ends
    assert order == ["build", "snapshot"]
    clock.advance(0.5)
    assert order == ["build", "snapshot", "task", "build", "snapshot"]
    delivery.close()
    with pytest.raises(RuntimeError, match="closed"):
        delivery.add_task(lambda: None)


def test_the_timer_survives_an_interval_no_wait_can_take():
    """`configure(throttle_ms=1e13)` used to kill the delivery thread for good
    (OverflowError in the timed wait); the monitor now refuses it, and the thread itself
    survives such an interval anyway."""
    clock = ManualClock()  # its waits refuse what a real timed wait cannot take
    calls: list[float] = []
    throttle = Throttle(lambda: calls.append(clock.monotonic()), 0.0, clock)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with clock.settled():
            throttle.poke()
        assert calls == [0.0]
        throttle.interval_s = 1e13
        with clock.settled():
            throttle.poke()
        clock.advance(7200.0)  # it waits at most an hour at a time, and delivers nothing
        assert calls == [0.0]
        assert max(t for t in clock.timeouts if t is not None) <= 3600.0
        with clock.settled():
            throttle.interval_s = 0.01
    assert calls == [0.0, 7200.0]  # the thread is alive and delivers again
    assert not [w for w in caught if "timer failed" in str(w.message)]
    throttle.close()
