"""The server runs in a background thread and leaves nothing behind when closed."""

import socket
import threading
import time

import httpx
import pytest
from conftest import wait_for
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def _threads():
    return {t for t in threading.enumerate() if t.name.startswith("featmon-serve")}


def test_close_ends_the_thread_releases_the_port_and_drops_clients(monitor):
    before = _threads()
    server = monitor.serve(quiet=True)
    url, port = server.url, server.port
    assert port > 0 and server.running and len(_threads()) == len(before) + 1
    headers = {"Authorization": f"Bearer {server.token}"}
    assert httpx.get(url + "/api/monitoring", headers=headers).status_code == 200
    with connect(url.replace("http", "ws") + f"/api/monitoring/ws?token={server.token}") as ws:
        ws.recv(timeout=10)
        assert wait_for(lambda: len(server.hub.clients) == 1)
        assert len(monitor.subscriptions) == 1  # the hub follows the monitor for its client
        started = time.monotonic()
        server.close()
        closing_s = time.monotonic() - started
        assert _threads() == before and not server.running
        with pytest.raises(ConnectionClosed):  # the client was disconnected
            for _ in range(10):
                ws.recv(timeout=5)
    print(f"close with one WebSocket client: {closing_s:.2f} s")
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/api/monitoring", headers=headers)
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.bind(("127.0.0.1", port))  # released: it can be bound again
    probe.close()
    assert len(monitor.subscriptions) == 0  # the hub unsubscribed


def test_context_manager_and_a_taken_port(monitor):
    with monitor.serve(quiet=True) as first, pytest.raises(OSError):
        monitor.serve(port=first.port, quiet=True)
    assert not first.running


def test_the_core_import_stays_light():
    import subprocess
    import sys

    code = ("import sys, featmon_widget; m = featmon_widget.FeatureMonitor(8); m.close(); "
            "print(any(n.split('.')[0] in ('fastapi', 'uvicorn', 'starlette', 'httpx', "
            "'websockets') for n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "False", out.stderr
