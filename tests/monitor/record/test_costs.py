"""What monitoring costs per forward: measured around each forward's work on a clock (the CPU),
averaged; a failed call is not measured; a reset forgets."""

from types import SimpleNamespace

import pytest
import torch

from featmon_widget.monitor.record import costs
from featmon_widget.monitor.record.costs import CostMeter

CPU = torch.device("cpu")


@pytest.fixture
def clock(monkeypatch):
    """A perf_counter that moves only when told (seconds)."""
    now = {"t": 100.0}
    monkeypatch.setattr(costs, "time", SimpleNamespace(perf_counter=lambda: now["t"]))
    return now


def test_the_mean_is_over_the_measured_forwards(clock):
    meter = CostMeter()
    assert meter.mean_ms() is None
    for seconds in (0.002, 0.004):
        meter.start(CPU)
        clock["t"] += seconds
        meter.stop()
    assert meter.measured == 2
    assert meter.mean_ms() == pytest.approx(3.0)
    assert meter.last_ms == pytest.approx(4.0)


def test_a_stop_without_a_start_measures_nothing(clock):
    meter = CostMeter()
    meter.stop()  # a failed call never reached `stop` after its `start`; nothing to pair
    meter.start(CPU)
    clock["t"] += 0.001
    meter.stop()
    meter.stop()
    assert meter.measured == 1 and meter.mean_ms() == pytest.approx(1.0)


def test_reset_forgets_the_measurements(clock):
    meter = CostMeter()
    meter.start(CPU)
    clock["t"] += 0.5
    meter.stop()
    meter.reset()
    assert (meter.measured, meter.total_ms, meter.last_ms, meter.mean_ms()) == (0, 0.0, None,
                                                                                  None)
