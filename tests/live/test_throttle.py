"""The throttle delivers on the leading edge, on the trailing edge of a burst, and at most once
per interval; a monitor's subscribers get the final state of a burst. Time is a `ManualClock`
(it moves only when the test advances it), so every edge is checked exactly."""

import subprocess
import sys
import threading

import pytest
import torch
from virtual_time import ManualClock

from featmon_widget import FeatureMonitor
from featmon_widget.live.throttle import Throttle


def test_leading_and_trailing_edge():
    clock = ManualClock()
    calls: list[float] = []
    throttle = Throttle(lambda: calls.append(clock.monotonic()), 0.25, clock)
    with clock.settled():
        throttle.poke()
    assert calls == [0.0]  # leading edge: at once
    clock.advance(0.125)
    with clock.settled():
        for _ in range(50):  # a burst inside the window
            throttle.poke()
    assert calls == [0.0]  # nothing before the interval ends
    clock.advance(0.0625)
    assert calls == [0.0]
    clock.advance(0.0625)  # the interval ends: the burst's end arrives, once
    assert calls == [0.0, 0.25]
    clock.advance(1.0)
    assert calls == [0.0, 0.25]  # nothing pending, nothing sent
    with clock.settled():
        throttle.poke()  # quiet for longer than the interval: the leading edge again
    assert calls == [0.0, 0.25, 1.25]
    throttle.close()


def test_at_most_one_delivery_per_interval_under_steady_pokes():
    clock = ManualClock()
    calls: list[float] = []
    throttle = Throttle(lambda: calls.append(clock.monotonic()), 0.5, clock)
    with clock.settled():
        throttle.poke()
    for _ in range(20):  # a poke every 0.125 s for 2.5 s
        clock.advance(0.125)
        with clock.settled():
            throttle.poke()
    assert calls == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    throttle.close()


def test_a_shorter_interval_applies_to_the_wait_in_progress():
    clock = ManualClock()
    calls: list[float] = []
    throttle = Throttle(lambda: calls.append(clock.monotonic()), 10.0, clock)
    with clock.settled():
        throttle.poke()
    with clock.settled():
        throttle.poke()
    clock.advance(1.0)
    assert calls == [0.0]
    with clock.settled():
        throttle.interval_s = 0.5  # already overdue: delivered without more time passing
    assert calls == [0.0, 1.0]
    throttle.close()


def test_nothing_is_delivered_after_close():
    clock = ManualClock()
    calls: list[float] = []
    throttle = Throttle(lambda: calls.append(clock.monotonic()), 0.25, clock)
    with clock.settled():
        throttle.poke()
    with clock.settled():
        throttle.poke()  # pending until 0.25 ...
    throttle.close()  # ... and dropped
    clock.advance(1.0)
    throttle.poke()
    assert calls == [0.0]


def test_broken_subscriber_does_not_stop_deliveries():
    first_failed = threading.Event()
    delivered = threading.Event()
    calls = {"n": 0}

    def deliver():
        calls["n"] += 1
        if calls["n"] == 1:
            first_failed.set()
            raise RuntimeError("boom")
        delivered.set()

    throttle = Throttle(deliver, 0.0)
    with pytest.warns(RuntimeWarning, match="boom"):
        throttle.poke()
        assert first_failed.wait(5)
        throttle.poke()
        # The thread warns about the first delivery before it runs the second one.
        assert delivered.wait(5)
    throttle.close()


def test_monitor_subscribe_gets_final_state_of_a_burst(manual_clock):
    m = FeatureMonitor(8, throttle_ms=100)
    snaps = []
    with manual_clock.settled():
        sub = m.subscribe(snaps.append)  # the leading edge
    for _ in range(20):
        m.on_activation(torch.rand(4, 8))
    manual_clock.advance(0.1)  # the trailing edge: the state after the burst
    assert snaps[-1].state.total_tokens == 80
    assert len(snaps) <= 2  # throttled, not one per forward
    seqs = [s.sequence for s in snaps]
    assert seqs == sorted(seqs)
    sub.cancel()
    n = len(snaps)
    m.on_activation(torch.rand(4, 8))
    manual_clock.advance(1.0)
    assert len(snaps) == n
    m.close()


def test_state_change_events():
    m = FeatureMonitor(8)
    events = []
    m.on_state_change(lambda name, state: events.append((name, state.enabled)))
    m.enable(False)
    m.configure(top_k=3)
    m.clear_history()
    m.reset_statistics()
    assert events == [("configured", False), ("configured", False), ("history_cleared", False),
                      ("statistics_reset", False)]


def test_subscriptions_get_their_own_table_options(manual_clock):
    m = FeatureMonitor(8, throttle_ms=0)
    got: dict[str, list] = {"a": [], "b": []}
    with manual_clock.settled():
        a = m.subscribe(got["a"].append, table_rows=3, metric="max")
    with manual_clock.settled():
        m.subscribe(got["b"].append, table_rows=5)
    with manual_clock.settled():
        m.on_activation(torch.rand(4, 8))
    assert len(got["a"][-1].table_features) == 3 * 4
    assert got["a"][-1].table_metric == "max"
    assert len(got["b"][-1].table_features) == 5 * 4
    with manual_clock.settled():
        a.update(metric="std")
    assert got["a"][-1].table_metric == "std"
    with pytest.raises(ValueError, match="nope"):
        a.update(metric="nope")
    assert a.metric == "std"
    m.close()


@pytest.mark.slow  # three fresh interpreters
def test_a_process_that_exits_with_a_subscription_exits_cleanly():
    """It aborted (exit code 134, "terminate called without an active exception") when the
    interpreter tore down while the delivery thread was inside a snapshot build."""
    code = ("from featmon_widget import FeatureMonitor\n"
            "m = FeatureMonitor(8, compile=False)\n"
            "m.subscribe(lambda s: None)\n")
    for _ in range(3):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
