"""Nobody gets in who should not: tokens, where they go, binding, bodies, CORS."""

import httpx
import pytest
import websockets
from conftest import api_client, fingerprint
from websockets.sync.client import connect

from featmon_widget.serve.auth import is_loopback
from featmon_widget.serve.server import MonitorServer

MUTATIONS = [("POST", "/configure", {"history_size": 3}), ("POST", "/enable", {"enabled": False}),
             ("DELETE", "/history", None), ("DELETE", "/statistics", None),
             ("POST", "/statistics/top", {"k": 2})]
READS = [("GET", "", None), ("GET", "/history", None), ("GET", "/statistics", None),
         ("GET", "/snapshot", None), ("GET", "/health", None)]


@pytest.mark.parametrize("headers, params, status", [
    ({}, {}, 401),
    ({"Authorization": "Bearer nope"}, {}, 403),
    ({"Authorization": "Basic abc"}, {}, 401),
    ({"Authorization": "Bearer"}, {}, 401),
    ({"X-Token": "TOKEN"}, {}, 401),
    ({}, {"token": "TOKEN"}, 403),  # the right token in the wrong place (HTTP query)
])
@pytest.mark.parametrize("method, path, body", MUTATIONS + READS)
def test_refused_requests_change_nothing(server, monitor, headers, params, status, method,
                                         path, body):
    headers = {k: v.replace("TOKEN", server.token) for k, v in headers.items()}
    params = {k: v.replace("TOKEN", server.token) for k, v in params.items()}
    before = fingerprint(monitor)
    with api_client(server, headers=headers) as c:
        response = c.request(method, path, params=params, json=body)
    assert response.status_code == status
    assert response.json()["detail"] and response.json()["field"] == "token"
    assert fingerprint(monitor) == before


def test_the_right_token_works_and_a_generated_one_is_printed_once(monitor, capsys):
    with monitor.serve() as s:
        err = capsys.readouterr().err
        assert err.count(s.token) == 1 and len(s.token) == 48
        assert httpx.get(s.url + "/api/monitoring",
                         headers={"Authorization": f"Bearer {s.token}"}).status_code == 200
    with monitor.serve(token="my-secret") as s:
        assert "my-secret" not in capsys.readouterr().err
        assert s.token == "my-secret"


def test_websocket_token_in_query_or_header(server):
    url = server.url.replace("http", "ws") + "/api/monitoring/ws"
    with connect(url + f"?token={server.token}") as ws:
        assert '"hello"' in ws.recv(timeout=10)
    with connect(url, additional_headers={"Authorization": f"Bearer {server.token}"}) as ws:
        assert '"hello"' in ws.recv(timeout=10)
    for suffix, headers, status in [("", {}, 401), ("?token=wrong", {}, 403),
                                    ("", {"Authorization": "Bearer wrong"}, 403)]:
        with pytest.raises(websockets.exceptions.InvalidStatus) as info:
            connect(url + suffix, additional_headers=headers)
        assert info.value.response.status_code == status


def test_non_loopback_bind_without_a_token_is_refused(monitor):
    for host in ("0.0.0.0", "192.168.1.10", "example.org", "::"):
        with pytest.raises(ValueError, match="without a token"):
            MonitorServer(monitor, host=host, token="")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")


def test_no_token_on_loopback_when_asked(monitor):
    with monitor.serve(token="") as s:
        assert httpx.get(s.url + "/api/monitoring").status_code == 200
        local = s.url.replace("127.0.0.1", "localhost")
        assert httpx.get(local + "/api/monitoring").status_code == 200
        # DNS rebinding: a page at evil.example resolving to 127.0.0.1 is refused.
        rebound = httpx.get(s.url + "/api/monitoring", headers={"Host": "evil.example:80"})
        assert rebound.status_code == 403 and rebound.json()["field"] == "token"


def test_bodies_are_bounded(http, monitor):
    before = fingerprint(monitor)
    big = b'{"features": [' + b"1," * 40_000 + b"1]}"
    response = http.post("/configure", content=big,
                         headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["field"] == "body"

    def chunks():  # no Content-Length: counted while read
        for _ in range(100):
            yield b" " * 1024

    response = http.post("/configure", content=chunks(),
                         headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert fingerprint(monitor) == before


def test_no_cors_unless_configured(server, monitor):
    origin = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    with api_client(server) as c:
        assert "access-control-allow-origin" not in c.get("", headers=origin).headers
        assert c.options("/configure", headers=origin).status_code in (401, 405)
    with monitor.serve(quiet=True, cors_origins=["http://lab.example"]) as s, \
            api_client(s) as c:
        ok = c.options("/configure", headers={**origin, "Origin": "http://lab.example"})
        assert ok.headers["access-control-allow-origin"] == "http://lab.example"
        evil = c.get("", headers=origin)
        assert "access-control-allow-origin" not in evil.headers
