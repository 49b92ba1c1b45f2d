"""`Queries` on its own: each component numbers its snapshots, a snapshot's oversight part is
what the oversight component's reading gives (for the firing summary the snapshot holds), the
state counts the watch hits, and labels change whole (a bad source changes nothing)."""

import pytest
import torch

from featmon_widget import FeatureMonitor
from featmon_widget.monitor.query.component import Queries

D = 9


class FakeLive:
    """What `Queries` uses of `LiveDelivery`: its error counts (in the state) and events."""

    errors, last_error = 0, None

    def __init__(self):
        self.events = []

    def emit(self, event):
        self.events.append(event)


class FakeReading:
    def snapshot_part(self):
        return {"from": "reading"}


class FakeOversight:
    """Records what the snapshot asked for."""

    def __init__(self):
        self.firing = []

    def start_reading(self, firing=None, with_drift=True):
        self.firing.append(firing)
        return FakeReading()

    def watch_hits(self):
        return 5


def queries_of(monitor):
    live, oversight = FakeLive(), FakeOversight()
    return Queries(monitor._lock, monitor._recording, monitor._attached, live, oversight), \
        live, oversight


def test_snapshots_take_the_oversight_part_from_a_reading():
    monitor = FeatureMonitor(D)
    monitor.on_activation(torch.rand(3, D))
    queries, _, oversight = queries_of(monitor)
    first, second = queries.snapshot(), queries.snapshot(table_rows=3)
    assert first.oversight == second.oversight == {"from": "reading"}
    assert [f is not None for f in oversight.firing] == [True, True]  # no second firing read
    assert (first.sequence, second.sequence) == (1, 2)  # this component's own numbering
    assert queries.state().watch_hits == 5
    assert queries.state().total_tokens == 3
    with pytest.raises(ValueError):
        queries.snapshot(metric="nope")  # checked before anything is built
    assert len(oversight.firing) == 2


def test_labels_are_replaced_whole_and_announced():
    monitor = FeatureMonitor(D)
    queries, live, _ = queries_of(monitor)
    assert queries.set_labels({1: "one", 2: "two"}) == 2
    assert live.events == ["labels"]
    with pytest.raises(ValueError):
        queries.set_labels({D: "too far"})
    assert live.events == ["labels"] and queries.get_examples(1).label == "one"
    assert queries.set_labels({}) == 0 and queries.get_examples(1).label is None


def test_reads_check_their_arguments_and_describe_the_monitor():
    monitor = FeatureMonitor(D, device="cpu")
    queries, _, _ = queries_of(monitor)
    with pytest.raises(ValueError, match="limit"):
        queries.get_history(limit=-1)
    with pytest.raises(ValueError, match="feature"):
        queries.get_examples(D)
    assert queries.describe() in repr(monitor)
