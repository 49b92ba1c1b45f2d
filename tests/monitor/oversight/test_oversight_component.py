"""`Oversight` on its own, with a stand-in for the live delivery: it owns its drift reference
(per component, never shared), adds the watch delivery task once however many watches there
are, hands out hits when the delivery thread asks, and gives a snapshot's oversight part
through `start_reading`."""

import pytest
import torch
from virtual_time import ManualClock

from featmon_widget import FeatureMonitor
from featmon_widget.live.gate import CallbackGate
from featmon_widget.monitor.oversight.component import Oversight, OversightReading
from featmon_widget.monitor.oversight.drift import Reference

D = 12


class FakeLive:
    """What `Oversight` uses of `LiveDelivery`: tasks for the delivery thread, pokes, the
    callback gate and the clock of the watches' workers (virtual: `clock.settled()` waits for
    them)."""

    def __init__(self):
        self.tasks, self.pokes = [], 0
        self.gate, self.clock = CallbackGate(), ManualClock()

    def check_open(self):
        pass

    def add_task(self, task):
        self.tasks.append(task)

    def poke(self):
        self.pokes += 1


def oversight_of(monitor):
    """A second `Oversight` on `monitor`'s recording (fed by `monitor.on_activation`)."""
    live = FakeLive()
    return Oversight(monitor._lock, monitor._recording, monitor._attached, live), live


def test_the_watch_task_is_added_once_and_hands_out_the_hits():
    monitor = FeatureMonitor(D)
    oversight, live = oversight_of(monitor)
    got = []
    first = oversight.watch([3], above=0.5, callback=got.append)
    second = oversight.watch(5, above=0.5)
    assert live.tasks == [oversight.deliver_watch_hits]
    acts = torch.zeros(1, 4, D)
    acts[0, 2, 3] = 0.9
    acts[0, 1, 5] = 0.7
    monitor.on_activation(acts)
    with live.clock.settled():  # the callback runs on the watch's own worker
        oversight.deliver_watch_hits()
    assert [(h.feature, h.position) for h in got] == [(3, 2)]
    assert [(h.feature, h.position) for h in second.recent] == [(5, 1)]
    assert oversight.watch_hits() == 2
    first.cancel()  # retired: no longer counted, the delivery thread is poked
    assert live.pokes == 1 and oversight.watch_hits() == 1
    assert live.tasks == [oversight.deliver_watch_hits]


def test_watch_arguments_are_checked_before_anything_is_added():
    oversight, live = oversight_of(FeatureMonitor(D))
    with pytest.raises(ValueError, match="at least one feature"):
        oversight.watch([])
    with pytest.raises(ValueError, match="above"):
        oversight.watch([1, 2], above=[0.1])
    with pytest.raises(TypeError, match="callable"):
        oversight.watch(1, callback="print")
    with pytest.raises(TypeError, match="Watch"):
        oversight.stopping_criteria(object())
    assert live.tasks == [] and oversight.watch_hits() == 0


def test_each_component_owns_its_reference():
    monitor, other = FeatureMonitor(D), FeatureMonitor(D)
    other.on_activation(torch.rand(5, D))
    a, _ = oversight_of(monitor)
    b, _ = oversight_of(monitor)
    assert a.reference is None and b.reference is None
    assert a.set_reference(other) is not None
    assert a.reference is other  # a live monitor is kept, read again at each get_drift
    assert b.reference is None
    with pytest.raises(ValueError, match="no reference"):
        b.get_drift()
    with pytest.raises(ValueError):
        a.set_reference(FeatureMonitor(D + 1))  # a bad source changes nothing
    assert a.reference is other
    assert a.set_reference(None) is None and a.reference is None


def test_a_saved_reference_is_read_once(tmp_path):
    saved = FeatureMonitor(D)
    saved.on_activation(torch.rand(6, D))
    saved.save(tmp_path / "ref")
    monitor = FeatureMonitor(D)
    oversight, _ = oversight_of(monitor)
    oversight.set_reference(tmp_path / "ref")
    assert isinstance(oversight.reference, Reference)
    monitor.on_activation(torch.rand(6, D))
    assert len(oversight.get_drift(3, "cold").features) == 3


def test_a_reading_gives_the_health_and_the_snapshot_part_from_one_copy():
    monitor = FeatureMonitor(D)
    monitor.on_activation(torch.rand(4, D))
    oversight, _ = oversight_of(monitor)
    oversight.watch([7, 2])
    reading = oversight.start_reading()
    assert isinstance(reading, OversightReading)
    health = reading.health()
    assert reading.health() is health  # waited for once
    assert health == oversight.get_health() == monitor.get_health()
    part = reading.snapshot_part()
    assert part["drift"] is None and part["watched"] == [2, 7] and part["watch_hits"] == 0
    assert part["health"]["dead"] == health.dead_features
    oversight.set_reference(monitor)
    assert oversight.start_reading().snapshot_part()["drift"] is not None
    assert oversight.start_reading(with_drift=False).snapshot_part()["drift"] is None
