import time

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from ipywidgets.widgets.widget import _remove_buffers

from featmon_widget import FeatureMonitor
from featmon_widget.widget import MonitorWidget


@pytest.fixture
def monitor():
    m = FeatureMonitor(16, throttle_ms=20, features=[1, 2, 3])
    yield m
    m.close()


@pytest.fixture
def widget(monitor):
    w = MonitorWidget(monitor)
    sent: list[dict] = []
    w.send = lambda content, buffers=None: sent.append(content)
    w.sent = sent
    yield w
    w.close()


def _wait_for(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def _command(widget, **content):
    reply = widget.answer({"id": 7, **content})
    assert widget.sent[-1] == reply  # exactly the reply that was sent
    return reply


def test_initial_snapshot_is_synced_with_binary_buffers(widget):
    snap = widget.snapshot
    assert snap["version"] == 1 and snap["state"]["d_sae"] == 16
    state, paths, buffers = _remove_buffers(widget.get_state())
    assert ["snapshot", "table_features"] in paths
    assert ["snapshot", "table_columns", "mean"] in paths
    assert all(isinstance(b, (bytes, memoryview)) for b in buffers)


def test_snapshots_arrive_live_from_the_monitor(widget, monitor):
    monitor.on_activation(torch.rand(3, 4, 16))
    assert _wait_for(lambda: widget.snapshot["state"]["total_tokens"] == 12)
    counts = np.frombuffer(widget.snapshot["table_columns"]["count"], "<f8")
    assert set(counts.tolist()) == {12.0}


def test_configure_round_trip(widget, monitor):
    reply = _command(widget, type="configure", changes={"features": [4, 5], "top_k": 3})
    assert reply == {"type": "reply", "id": 7, "ok": True, "message": "applied features, top_k",
                     "error": None}
    assert monitor.state.monitored_features == [4, 5] and monitor.state.top_k == 3
    assert widget.snapshot["state"]["monitored_features"] == [4, 5]  # pushed at once


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ({"type": "configure", "changes": {"features": [99]}}, "0..15, got 99"),
        ({"type": "configure", "changes": {"history_size": 0}}, "history_size"),
        ({"type": "configure", "changes": {"enabled": False}}, "cannot change enabled"),
        ({"type": "configure", "changes": {}}, "non-empty"),
        ({"type": "enable", "enabled": "yes"}, "true or false"),
        ({"type": "rank", "metric": "bogus"}, "bogus"),
        ({"type": "select", "features": list(range(9))}, "at most 8"),
        ({"type": "table_rows", "rows": 0}, "table_rows"),
        ({"type": "explode"}, "unknown command 'explode'"),
    ],
)
def test_rejected_commands_reply_with_the_error_and_change_nothing(widget, monitor, content,
                                                                   needle):
    before = monitor.state
    options = widget.subscription.options()
    reply = _command(widget, **content)
    assert reply["ok"] is False and reply["id"] == 7
    assert needle in reply["error"]
    assert monitor.state == before
    assert widget.subscription.options() == options


def test_malformed_message_gets_an_error_reply(widget):
    widget.answer(["not", "a", "dict"])
    assert widget.sent[-1]["ok"] is False and "type" in widget.sent[-1]["error"]


def test_enable_clear_reset(widget, monitor):
    monitor.on_activation(torch.rand(2, 16))
    assert _command(widget, type="enable", enabled=False)["message"] == "paused"
    assert monitor.state.enabled is False
    assert _command(widget, type="clear_history")["message"] == "cleared 2 records"
    assert monitor.get_history().total == 0
    assert _command(widget, type="reset_statistics")["message"] == \
        "reset statistics of 3 features"
    assert monitor.state.total_tokens == 0
    assert widget.snapshot["state"]["total_tokens"] == 0


def test_rank_select_and_table_rows_change_the_snapshot(widget, monitor):
    monitor.configure(features=None)
    monitor.on_activation(torch.rand(5, 16))
    assert _command(widget, type="rank", metric="max")["ok"]
    assert widget.snapshot["table_metric"] == "max"
    top = monitor.get_top_features(k=16, metric="max").features
    got = np.frombuffer(widget.snapshot["table_features"], "<i4").tolist()
    assert got == [r.feature_idx for r in top]
    assert _command(widget, type="table_rows", rows=3)["ok"]
    assert len(np.frombuffer(widget.snapshot["table_features"], "<i4")) == 3
    assert _command(widget, type="select", features=[2, 7])["ok"]
    assert monitor.state.selected_features == [2, 7]
    assert np.frombuffer(widget.snapshot["value_features"], "<i4").tolist() == [2, 7]


def test_stale_snapshot_is_not_synced_over_a_newer_one(widget, monitor):
    old = monitor.snapshot()
    newer = monitor.snapshot()
    widget.push(newer)
    widget.push(old)
    assert widget.snapshot["sequence"] == newer.sequence


def test_close_stops_deliveries(monitor):
    w = MonitorWidget(monitor)
    w.close()
    assert w.subscription not in monitor.subscriptions


def test_monitor_widget_is_reused_until_closed(monitor):
    a = monitor.widget()
    assert monitor.widget() is a
    a.close()
    b = monitor.widget()
    assert b is not a
    b.close()


def test_repr_is_stable(monitor):
    w = MonitorWidget(monitor)
    assert repr(w) == "MonitorWidget(FeatureMonitor(d_sae=16, device='cpu', enabled=True, " \
                      "history_size=100, top_k=10))"
    w.close()


def test_figure_has_the_histograms_and_the_table(monitor):
    monitor.configure(selected=[1, 2])
    monitor.on_activation(torch.rand(4, 16))
    w = MonitorWidget(monitor)
    fig = w.figure()
    assert isinstance(fig, go.Figure)
    kinds = [t.type for t in fig.data]
    assert kinds == ["bar", "bar", "bar", "table"]
    assert fig.data[0].x[0] == "never fired"
    assert sorted(fig.data[3].cells.values[0]) == [1, 2, 3]  # the monitored features
    w.close()


def test_widget_requires_a_monitor():
    with pytest.raises(TypeError, match="FeatureMonitor"):
        MonitorWidget("nope")


def test_figure_without_selected_features(monitor):
    monitor.on_activation(torch.rand(4, 16))
    w = MonitorWidget(monitor)
    assert [t.type for t in w.figure().data] == ["bar", "table"]
    w.close()


def test_a_command_that_fails_in_any_way_still_gets_one_reply(widget, monitor, monkeypatch):
    def out_of_memory(**changes):
        raise RuntimeError("out of memory while resizing the history")

    monkeypatch.setattr(monitor, "configure", out_of_memory)
    before = len(widget.sent)
    reply = _command(widget, type="configure", changes={"history_size": 10**5})
    assert len(widget.sent) == before + 1
    assert reply["ok"] is False
    assert "RuntimeError: out of memory while resizing the history" in reply["error"]


def test_non_finite_table_rows_gets_an_error_reply(widget):
    options = widget.subscription.options()
    reply = _command(widget, type="table_rows", rows=float("inf"))
    assert reply["ok"] is False and reply["id"] == 7
    assert widget.subscription.options() == options


def test_search_command_filters_the_table_in_the_kernel(widget, monitor):
    monitor.configure(features=None)
    monitor.set_labels({5: "commas", 9: "semicolons"})
    monitor.on_activation(torch.rand(3, 16))
    def table():
        return np.frombuffer(widget.snapshot["table_features"], "<i4").tolist()

    reply = _command(widget, type="search", text="  COMMAS ")
    assert reply["ok"] and reply["message"] == "searching for 'COMMAS'"
    assert _wait_for(lambda: table() == [5])
    assert widget.snapshot["table_search"] == "COMMAS"
    assert _command(widget, type="search", text="")["message"] == "showing all features"
    assert _wait_for(lambda: len(table()) == 16)
    assert _command(widget, type="search", text=["x"])["ok"] is False


def test_a_widget_that_fails_to_build_stays_registered_nowhere(monitor):
    """A widget that fails to build is not left registered (`MonitorWidget(m, table_rows=0)`
    used to leave one)."""
    from ipywidgets.widgets import widget as ipywidget

    before = len(ipywidget._instances)
    with pytest.raises(ValueError, match="table_rows"):
        MonitorWidget(monitor, table_rows=0)
    closed = FeatureMonitor(16)
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        MonitorWidget(closed)
    assert len(ipywidget._instances) == before


def test_replies_never_echo_an_unbounded_input(widget):
    """Replies are bounded whatever the input (a 1 MB `type` came back as a 1 MB reply)."""
    reply = widget.answer({"id": "x" * 100_000, "type": "t" * 1_000_000})
    assert reply["ok"] is False and len(reply["error"]) <= 500
    assert reply["id"] is None
    assert len(str(reply)) < 1_000
    assert _command(widget, type="enable", enabled=True)["id"] == 7  # real ids still echo
