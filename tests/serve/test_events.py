"""The WebSocket: events in order, the last state of a burst always arrives, and a slow client
never holds anything up."""

import asyncio
import json
import socket
import time

import pytest
import torch
from conftest import D_SAE, run_async, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from featmon_widget.serve.hub import Client, Hub


def _ws(server, **kwargs):
    return connect(server.url.replace("http", "ws") + f"/api/monitoring/ws?token={server.token}",
                   **kwargs)


def _events(ws, until, timeout=15.0):
    """Events until `until(event)` holds (that one included)."""
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = json.loads(ws.recv(timeout=deadline - time.monotonic()))
        out.append(event)
        if until(event):
            return out
    raise AssertionError(f"gave up after {len(out)} events")


def test_activation_updates_arrive_in_order_with_the_trailing_edge(server, monitor):
    with _ws(server) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["event"] == "hello" and hello["state"]["d_sae"] == D_SAE
        with monitor.request("burst"):
            for _ in range(40):
                monitor.on_activation(torch.rand(1, 1, D_SAE))
        events = _events(ws, lambda e: e["event"] == "activation_update"
                         and e["request_id"] == "burst" and e["position"] == 39)
    updates = [e for e in events if e["event"] == "activation_update"
               and e["request_id"] == "burst"]
    positions = [e["position"] for e in updates]
    assert positions == sorted(positions) and positions[-1] == 39
    last = updates[-1]
    assert set(last) >= {"timestamp", "features", "request_id", "position"}
    assert all(set(f) == {"idx", "value"} for f in last["features"])
    assert last["features"][0]["value"] >= last["features"][-1]["value"]


def test_state_changes_arrive_in_order(server, monitor, http):
    with _ws(server) as ws:
        ws.recv(timeout=10)
        http.post("/configure", json={"history_size": 9})
        http.post("/enable", json={"enabled": False})
        http.delete("/history")
        http.delete("/statistics")
        events = _events(ws, lambda e: e.get("change") == "statistics_reset")
    changes = [e for e in events if e["event"] == "monitoring_state_changed"]
    assert [e["change"] for e in changes] == ["configured", "configured", "history_cleared",
                                              "statistics_reset"]
    assert changes[0]["history_size"] == 9 and changes[1]["enabled"] is False
    assert changes[-1]["state"]["total_tokens"] == 0


def test_snapshots_for_widgets_and_their_final_state(server, monitor):
    with _ws(server) as ws:
        ws.recv(timeout=10)
        ws.send(json.dumps({"type": "subscribe", "table_rows": 5, "records": 3}))
        first = _events(ws, lambda e: e["event"] == "snapshot")[-1]["snapshot"]
        assert len(first["records"]) == 3
        for _ in range(30):
            monitor.on_activation(torch.rand(2, D_SAE))
        total = monitor.state.total_tokens
        _events(ws, lambda e: e["event"] == "snapshot"
                and e["snapshot"]["state"]["total_tokens"] == total)
        ws.send(json.dumps({"type": "subscribe", "table_rows": 0}))
        error = _events(ws, lambda e: e["event"] == "error")[-1]
        assert "table_rows" in error["detail"]
        ws.send("not json")
        assert "JSON" in _events(ws, lambda e: e["event"] == "error")[-1]["detail"]
        ws.send(json.dumps({"type": "unsubscribe"}))
        assert wait_for(lambda: len(monitor.subscriptions) == 1)  # the hub's own
    assert wait_for(lambda: len(monitor.subscriptions) == 0)  # no client: no snapshots built


def test_a_slow_client_is_coalesced_then_dropped():
    async def scenario():
        release = asyncio.Event()
        sent = []

        async def send(text):
            await release.wait()
            sent.append(text)

        client = Client(send, max_queue=4, stall_s=60)
        writer = asyncio.create_task(client.write())
        client.offer("hello", "h")
        await asyncio.sleep(0)  # the writer takes "h" and blocks in send
        for i in range(100):
            client.offer("snapshot", f"s{i}")
            client.offer("activation_update", f"a{i}")
        assert [k for k, _ in client.queue] == ["snapshot", "activation_update"]
        assert client.coalesced == 198 and client.dropped is None
        release.set()
        await asyncio.sleep(0.01)
        assert sent == ["h", "s99", "a99"]  # only the latest of each kind
        release.clear()
        client.offer("snapshot", "x")
        await asyncio.sleep(0)
        for i in range(4):
            client.offer("monitoring_state_changed", f"c{i}")
        assert client.dropped is None  # four wait: the queue is full, not over
        client.offer("monitoring_state_changed", "c4")
        assert client.dropped and "fell behind" in client.dropped and client.gone.is_set()
        writer.cancel()

        stalled = Client(send, stall_s=0.01)
        writer = asyncio.create_task(stalled.write())
        stalled.offer("hello", "h")
        await asyncio.sleep(0.05)
        stalled.offer("snapshot", "s")
        assert stalled.dropped and "stalled" in stalled.dropped
        writer.cancel()

    run_async(scenario)


@pytest.mark.slow  # ~20 s: the loopback socket buffers take megabytes to fill
def test_a_stalled_client_is_dropped_and_the_others_keep_up(monitor):
    monitor.configure(throttle_ms=1, features=list(range(64)))  # many large snapshots
    with monitor.serve(quiet=True, stall_s=0.3) as server:
        # A client that never reads: websockets stops reading the socket once its queue of one
        # message is full, so the server's sends back up.
        tight = socket.socket()
        tight.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
        tight.connect(("127.0.0.1", server.port))
        with _ws(server, max_queue=1, sock=tight) as stalled, _ws(server) as good:
            stalled.send(json.dumps({"type": "subscribe", "table_rows": 200, "records": 50}))
            good.recv(timeout=10)
            deadline = time.monotonic() + 60
            while server.hub.dropped == 0 and time.monotonic() < deadline:
                monitor.on_activation(torch.rand(8, D_SAE))
                time.sleep(0.002)
            assert server.hub.dropped == 1 and len(server.hub.clients) == 1
            monitor.on_activation(torch.rand(1, D_SAE))
            position = monitor.get_history(limit=1).records[0]
            _events(good, lambda e: e["event"] == "activation_update"
                    and e["timestamp"] == position.timestamp)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(text=st.one_of(
    st.text(max_size=80),
    st.dictionaries(st.sampled_from(["type", "table_rows", "metric", "records", "search", "x"]),
                    st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.text(max_size=8),
                              st.sampled_from(["subscribe", "unsubscribe", "mean", "max"])),
                    max_size=5).map(json.dumps),
    st.integers(0, 10_000).map(lambda n: "x" * n)))
def test_any_client_message_is_applied_or_answered_with_an_error(text):
    class Stub:  # what the hub asks of a monitor for subscriptions
        def subscribe(self, callback, **options):
            from featmon_widget.live.subscriptions import Subscription
            from featmon_widget.snapshot.options import snapshot_options

            return Subscription(callback, snapshot_options(**options), lambda s: None,
                                lambda: None)

    async def scenario():
        hub = Hub(Stub())
        client = Client(lambda text: asyncio.sleep(0))
        hub.handle(client, text)  # never raises
        for kind, message in client.queue:
            assert kind == "error" and json.loads(message)["detail"]
        if client.subscription is not None:
            assert json.loads(text)["type"] == "subscribe"

    run_async(scenario)
