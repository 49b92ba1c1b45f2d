"""RemoteMonitor: the local monitor's answers from another process's point of view, its
operations acting on the server, and a widget of it."""

import pytest
import torch
from conftest import D_SAE, wait_for

from featmon_widget import FeatureMonitor, types
from featmon_widget.serve import RemoteMonitor


@pytest.fixture
def remote(server):
    with RemoteMonitor(server.url, token=server.token) as r:
        yield r


def _same_state(a: types.MonitorState, b: types.MonitorState) -> bool:
    return a.to_dict() | {"monitor_ms": None} == b.to_dict() | {"monitor_ms": None}


def test_reads_equal_the_local_monitor(remote, monitor):
    assert _same_state(remote.state, monitor.state) and remote.d_sae == D_SAE
    assert remote.get_history() == monitor.get_history()
    assert remote.get_history(3, "alpha", 1) == monitor.get_history(3, "alpha", 1)
    assert remote.get_statistics() == monitor.get_statistics()
    assert remote.get_statistics([0, 5, 63]) == monitor.get_statistics([0, 5, 63])
    assert remote.get_top_features(7, "max") == monitor.get_top_features(7, "max")
    assert remote.get_examples(3, 2) == monitor.get_examples(3, 2)
    assert remote.get_examples(3, kind="sample") == monitor.get_examples(3, kind="sample")
    assert remote.get_health() == monitor.get_health()
    snap, local = remote.snapshot(10, "count", 4), monitor.snapshot(10, "count", 4)
    assert snap.table_columns == local.table_columns and snap.records == local.records
    assert isinstance(remote.get_history().records[0], types.ActivationRecord)


def test_operations_act_on_the_server(remote, monitor):
    state = remote.configure(features=[4, 2], history_size=30)
    assert state.monitored_features == [4, 2] and monitor.config.history_size == 30
    assert remote.enable(False).enabled is False and not monitor.config.enabled
    remote.enable()
    held = monitor.state.history_count
    assert remote.clear_history() == held and monitor.state.history_count == 0
    assert remote.reset_statistics() == 2 and monitor.state.total_tokens == 0


def test_rejections_raise_value_error_and_change_nothing(remote, monitor):
    before = monitor.config
    with pytest.raises(ValueError, match="history_size"):
        remote.configure(history_size=0)
    with pytest.raises(ValueError, match="metric"):
        remote.get_top_features(3, "median")
    with pytest.raises(ValueError, match="features"):
        remote.get_statistics([D_SAE])
    assert monitor.config == before
    with RemoteMonitor(remote.url, token="wrong") as bad, pytest.raises(PermissionError):
        bad.state  # noqa: B018


def test_subscription_follows_the_server_to_its_final_state(remote, monitor):
    got = []
    sub = remote.subscribe(got.append, table_rows=5, records=2)
    assert wait_for(lambda: got)
    for _ in range(20):
        monitor.on_activation(torch.rand(3, D_SAE))
    total = monitor.state.total_tokens
    assert wait_for(lambda: got[-1].state.total_tokens == total)
    assert len(got[-1].records) == 2
    sub.update(metric="count", table_rows=3)
    assert wait_for(lambda: got[-1].table_metric == "count")
    sub.cancel()
    assert wait_for(lambda: len(monitor.subscriptions) == 0)  # no client: the hub stops too


def test_state_change_listener(remote, monitor):
    events = []
    stop = remote.on_state_change(lambda event, state: events.append((event, state)))
    assert wait_for(lambda: remote._streams[0].connected.is_set())
    monitor.reset_statistics()
    assert wait_for(lambda: events)
    assert events[0][0] == "statistics_reset" and events[0][1].total_tokens == 0
    stop()


def test_a_widget_of_a_remote_monitor_controls_the_server(remote, monitor):
    from featmon_widget.widget import MonitorWidget

    widget = MonitorWidget(remote)
    widget.send = lambda content, buffers=None: None
    try:
        assert widget.snapshot["state"]["total_tokens"] == monitor.state.total_tokens
        monitor.on_activation(torch.rand(4, D_SAE))
        total = monitor.state.total_tokens
        assert wait_for(lambda: widget.snapshot["state"]["total_tokens"] == total)
        assert widget.answer({"id": 1, "type": "reset_statistics"})["ok"]
        assert monitor.state.total_tokens == 0  # the Reset button acted on the server
        assert wait_for(lambda: widget.snapshot["state"]["total_tokens"] == 0)
        reply = widget.answer({"id": 2, "type": "configure", "changes": {"top_k": 0}})
        assert not reply["ok"] and "top_k" in reply["error"]
        assert widget.answer({"id": 3, "type": "enable", "enabled": False})["ok"]
        assert not monitor.config.enabled
        assert widget.answer({"id": 4, "type": "rank", "metric": "max"})["ok"]
        assert wait_for(lambda: widget.snapshot["table_metric"] == "max")
    finally:
        widget.close()
    assert remote.widget() is remote.widget()
    remote.widget().close()


def test_a_remote_monitor_reconnects_after_the_server_restarts():
    monitor = FeatureMonitor(8, throttle_ms=10)
    try:
        server = monitor.serve(token="t", quiet=True)
        port = server.port
        with RemoteMonitor(server.url, token="t") as remote:
            got = []
            remote.subscribe(got.append, table_rows=2, records=1)
            assert wait_for(lambda: got)
            server.close()
            server = monitor.serve(port=port, token="t", quiet=True)
            monitor.on_activation(torch.rand(2, 8))
            assert wait_for(lambda: got[-1].state.total_tokens == 2)
            server.close()
    finally:
        monitor.close()


def test_cofiring_and_probe_equal_the_local_monitor():
    from tiny_model import attach_tiny, tiny_sae

    sae = tiny_sae(12)
    monitor = attach_tiny(FeatureMonitor.for_sae(sae, compile=False, selected=[2, 5]), sae)
    monitor.set_labels({3: "three"})
    try:
        with monitor.serve(quiet=True) as server, \
                RemoteMonitor(server.url, token=server.token) as remote:
            remote.probe("hello there", record=True)
            assert monitor.state.total_tokens == 11
            assert remote.get_cofiring(2, 4) == monitor.get_cofiring(2, 4)
            assert remote.probe(["abc", "de"], k=3) == monitor.probe(["abc", "de"], k=3)
            with pytest.raises(ValueError, match="7"):
                remote.get_cofiring(7)
            assert monitor.state.total_tokens == 11  # nothing recorded by the rest
    finally:
        monitor.close()
