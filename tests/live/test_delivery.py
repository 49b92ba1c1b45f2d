"""Issue 12, defects 1 and 2: one broken subscriber or build must not stop the others."""

import threading
import time
import warnings

import pytest
import torch

from featmon_widget import FeatureMonitor
from featmon_widget.live.delivery import LiveDelivery
from featmon_widget.live.throttle import Throttle
from featmon_widget.snapshot.options import snapshot_options


def _wait_for(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while not predicate() and time.monotonic() < end:
        time.sleep(0.01)
    return predicate()


def test_a_raising_subscriber_does_not_stop_the_ones_after_it():
    monitor = FeatureMonitor(8, throttle_ms=0)
    got = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor.subscribe(lambda snap: 1 / 0)
        monitor.subscribe(got.append)
        for _ in range(3):
            monitor.on_activation(torch.rand(2, 8))
            time.sleep(0.05)
        assert _wait_for(lambda: len(got) >= 2)
    state = monitor.state
    assert state.delivery_errors >= 2
    assert "ZeroDivisionError" in state.last_delivery_error
    ours = [w for w in caught if "subscriber failed" in str(w.message)]
    assert len(ours) == 1  # warned once for that subscriber, counted every time
    monitor.close()


def test_a_failing_build_is_reported_and_other_option_sets_still_delivered():
    def build(options):
        if options.table_rows == 7:
            raise RuntimeError("no snapshot for you")
        return options

    delivery = LiveDelivery(build, lambda: None, 0.0)
    got = []
    with pytest.warns(RuntimeWarning, match="could not be built"):
        delivery.subscribe(lambda snap: None, snapshot_options(7, "mean", 5))
        delivery.subscribe(got.append, snapshot_options(5, "mean", 5))
        assert _wait_for(lambda: len(got) >= 1)
        delivery.close()
    assert delivery.errors >= 1 and "no snapshot for you" in delivery.last_error


def test_the_timer_survives_an_interval_no_wait_can_take():
    """`configure(throttle_ms=1e13)` used to kill the delivery thread for good
    (OverflowError in the timed wait); the monitor now refuses it, and the thread itself
    survives such an interval anyway."""
    delivered = threading.Event()
    throttle = Throttle(delivered.set, 0.0)
    throttle.poke()
    assert delivered.wait(5)
    delivered.clear()
    throttle.interval_s = 1e13
    throttle.poke()
    assert not delivered.wait(0.2)
    throttle.interval_s = 0.01
    assert delivered.wait(5)  # the thread is alive and delivers again
    throttle.close()
