import threading
import time

import pytest
import torch

from featmon_widget import FeatureMonitor
from featmon_widget.live.throttle import Throttle


def test_leading_and_trailing_edge():
    calls: list[float] = []
    done = threading.Event()

    def deliver():
        calls.append(time.monotonic())
        done.set()

    throttle = Throttle(deliver, 0.2)
    start = time.monotonic()
    throttle.poke()
    assert done.wait(1.0)
    assert calls[0] - start < 0.15  # leading edge: at once
    done.clear()
    for _ in range(50):  # a burst inside the window
        throttle.poke()
    assert done.wait(1.0)  # trailing edge: the burst's end still arrives
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.19
    time.sleep(0.3)
    assert len(calls) == 2  # nothing pending, nothing sent
    throttle.close()


def test_broken_subscriber_does_not_stop_deliveries():
    n = {"calls": 0}
    done = threading.Event()

    def deliver():
        n["calls"] += 1
        if n["calls"] == 1:
            raise RuntimeError("boom")
        done.set()

    throttle = Throttle(deliver, 0.0)
    with pytest.warns(RuntimeWarning, match="boom"):
        throttle.poke()
        time.sleep(0.1)
    throttle.poke()
    assert done.wait(1.0)
    throttle.close()


def test_monitor_subscribe_gets_final_state_of_a_burst():
    m = FeatureMonitor(8, throttle_ms=100)
    snaps = []
    sub = m.subscribe(snaps.append)
    for _ in range(20):
        m.on_activation(torch.rand(4, 8))
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and (not snaps or snaps[-1].state.total_tokens != 80):
        time.sleep(0.02)
    assert snaps[-1].state.total_tokens == 80
    assert len(snaps) <= 4  # throttled, not one per forward
    seqs = [s.sequence for s in snaps]
    assert seqs == sorted(seqs)
    sub.cancel()
    n = len(snaps)
    m.on_activation(torch.rand(4, 8))
    time.sleep(0.3)
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


def test_subscriptions_get_their_own_table_options():
    m = FeatureMonitor(8, throttle_ms=0)
    got: dict[str, list] = {"a": [], "b": []}
    a = m.subscribe(got["a"].append, table_rows=3, metric="max")
    m.subscribe(got["b"].append, table_rows=5)
    m.on_activation(torch.rand(4, 8))
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not (got["a"] and got["b"]):
        time.sleep(0.01)
    assert len(got["a"][-1].table_features) == 3 * 4
    assert got["a"][-1].table_metric == "max"
    assert len(got["b"][-1].table_features) == 5 * 4
    a.update(metric="std")
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and got["a"][-1].table_metric != "std":
        time.sleep(0.01)
    assert got["a"][-1].table_metric == "std"
    with pytest.raises(ValueError, match="nope"):
        a.update(metric="nope")
    assert a.metric == "std"
    m.close()


def test_a_process_that_exits_with_a_subscription_exits_cleanly():
    """It aborted (exit code 134, "terminate called without an active exception") when the
    interpreter tore down while the delivery thread was inside a snapshot build."""
    import subprocess
    import sys

    code = ("from featmon_widget import FeatureMonitor\n"
            "m = FeatureMonitor(8, compile=False)\n"
            "m.subscribe(lambda s: None)\n")
    for _ in range(3):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
