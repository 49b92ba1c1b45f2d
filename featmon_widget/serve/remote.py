"""`RemoteMonitor`: a monitor served by another process (`monitor.serve()`), used like a local
one. The reads and the 8 operations go over HTTP and give the same `featmon_widget.types`
objects; `subscribe` and `on_state_change` follow the WebSocket (one connection each, in a
background thread, reconnecting when the connection drops). `MonitorWidget(remote)` and
`remote.widget()` show the other process's monitor, its controls acting there.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from typing import Any

from .. import types
from ..live.subscriptions import Subscription
from ..snapshot.options import SnapshotOptions, snapshot_options
from ..snapshot.schemas import Snapshot
from . import wire

PREFIX = "/api/monitoring"
RETRY_S = (0.1, 0.2, 0.5, 1.0, 2.0)  # waits between reconnection attempts (the last repeats)


class RemoteError(RuntimeError):
    """The server failed in a way that is not a rejection of the request (a 5xx)."""


class RemoteMonitor:
    """The monitor served at `url` (`http://host:port`, as `MonitorServer.url` says) with
    `token`. Rejected operations raise ValueError with the server's message (nothing changed
    there); a wrong or missing token raises PermissionError."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        import httpx  # the client's only dependencies: httpx here, websockets when following

        self.url = url.rstrip("/")
        self.token = token
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=self._headers, timeout=timeout)
        self._streams: list[_Stream] = []
        self._lock = threading.Lock()

    # ---- HTTP -------------------------------------------------------------------------------

    def _call(self, method: str, path: str = "", **kwargs: Any) -> Any:
        response = self._http.request(method, PREFIX + path, **kwargs)
        if response.status_code < 400:
            return response.json()
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        if response.status_code in (401, 403):
            raise PermissionError(f"{self.url}: {detail}")
        if response.status_code < 500:
            raise ValueError(detail)
        raise RemoteError(f"{self.url} answered {response.status_code}: {detail}")

    @property
    def state(self) -> types.MonitorState:
        """Configuration, attachment, totals and errors of the remote monitor."""
        return wire.state_from(self._call("GET"))

    @property
    def d_sae(self) -> int:
        """The remote monitor's width."""
        return self.state.d_sae

    def configure(self, **changes: Any) -> types.MonitorState:
        """Change only the given settings on the server; its new state."""
        return wire.state_from(self._call("POST", "/configure", json=wire.jsonable(changes)))

    def enable(self, flag: bool = True) -> types.MonitorState:
        """Record or pause on the server; its new state."""
        return wire.state_from(self._call("POST", "/enable", json={"enabled": flag}))

    def get_history(self, limit: int = 50, request_id: str | None = None,
                    row: int | None = None) -> types.HistoryResponse:
        """Recorded tokens, newest first (see `FeatureMonitor.get_history`)."""
        params = {k: v for k, v in (("limit", limit), ("request_id", request_id),
                                    ("row", row)) if v is not None}
        return wire.history_from(self._call("GET", "/history", params=params))

    def clear_history(self) -> int:
        """Empty the server's history; how many records were cleared."""
        return self._call("DELETE", "/history")["cleared"]

    def get_statistics(self, features: list[int] | None = None) -> types.StatisticsResponse:
        """Statistics of `features` (default: the monitored features, or all)."""
        params = None if features is None else {"features": ",".join(map(str, features))}
        return wire.statistics_response_from(self._call("GET", "/statistics", params=params))

    def reset_statistics(self) -> int:
        """Zero the server's statistics; the number of monitored features reset."""
        return self._call("DELETE", "/statistics")["cleared"]

    def get_top_features(self, k: int = 10, metric: str = "mean") -> types.TopFeaturesResponse:
        """The k features ranked highest by `metric` on the server."""
        return wire.top_from(self._call("POST", "/statistics/top",
                                        json={"k": k, "metric": metric}))

    def get_examples(self, feature: int, k: int | None = None,
                     kind: str = "top") -> types.ExamplesResponse:
        """`feature`'s top-activating examples, or (`kind="sample"`) a uniform sample of its
        activating tokens."""
        params: dict[str, Any] = {"kind": kind} if k is None else {"k": k, "kind": kind}
        return wire.examples_from(self._call("GET", f"/examples/{int(feature)}", params=params))

    def get_cofiring(self, feature: int, k: int = 10) -> types.CoFiringResponse:
        """What a selected `feature` fires with on the server, ranked by Jaccard."""
        return wire.cofiring_from(self._call("GET", f"/cofiring/{int(feature)}",
                                             params={"k": k}))

    def probe(self, texts: str | list[str], record: bool = False,
              features: list[int] | None = None, k: int = 5) -> types.ProbeResponse:
        """Run the server's model on `texts` and read the features on each token (see
        `FeatureMonitor.probe`); recorded there only if `record`."""
        return wire.probe_from(self._call("POST", "/probe", json={
            "texts": texts, "record": record, "features": features, "k": k}))

    def get_health(self) -> types.HealthResponse:
        """L0, dead and ultra-rare features, reconstruction quality."""
        return wire.health_from(self._call("GET", "/health"))

    def get_drift(self, k: int = 10, direction: str = "hot") -> types.DriftResponse:
        """The features whose firing moved most against the server's reference."""
        return wire.drift_from(self._call("GET", "/drift",
                                          params={"k": k, "direction": direction}))

    def get_logits(self, feature: int, k: int = 10) -> types.LogitsResponse:
        """What `feature` promotes and suppresses (the server's `get_logits`)."""
        return wire.logits_from(self._call("GET", f"/logits/{int(feature)}", params={"k": k}))

    def snapshot(self, table_rows: int = 50, metric: str = "mean", records: int = 20,
                 search: str = "") -> Snapshot:
        """A bounded snapshot of the remote monitor now."""
        snapshot_options(table_rows, metric, records, search)  # bad options: raise here
        return wire.snapshot_from(self._call("GET", "/snapshot", params={
            "table_rows": table_rows, "metric": metric, "records": records, "search": search}))

    def get(self, path: str, **params: Any) -> Any:
        """Any other read under /api/monitoring as JSON, e.g. `get("/distribution/3")` (the
        reads a newer server has)."""
        return self._call("GET", path, params=params)

    # ---- WebSocket --------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Snapshot], None], *, table_rows: int = 50,
                  metric: str = "mean", records: int = 20, search: str = "") -> Subscription:
        """Throttled snapshots of the remote monitor to `callback` (from a background thread),
        the last of a burst included. `cancel()` the result to stop."""
        options = snapshot_options(table_rows, metric, records, search)
        stream = _Stream(self, snapshots=True)
        sub = Subscription(callback, options, cancel=lambda s: self._stop(stream),
                           poke=lambda: stream.send_options(sub.options()))
        stream.subscription = sub
        self._start(stream)
        return sub

    def on_state_change(self, callback: Callable[[str, types.MonitorState], None]
                        ) -> Callable[[], None]:
        """Call `callback(event, state)` after each configure/enable/clear/reset on the
        server; returns the function that stops it."""
        stream = _Stream(self, snapshots=False, listener=callback)
        self._start(stream)
        return lambda: self._stop(stream)

    def events(self) -> Any:
        """A raw WebSocket connection to the event stream (a `websockets` sync client)."""
        from websockets.sync.client import connect

        return connect(self.ws_url, additional_headers=self._headers)

    @property
    def ws_url(self) -> str:
        """The event stream's URL."""
        return "ws" + self.url[len("http"):] + PREFIX + "/ws"

    def _start(self, stream: _Stream) -> None:
        with self._lock:
            self._streams.append(stream)
        stream.start()

    def _stop(self, stream: _Stream) -> None:
        with self._lock:
            if stream in self._streams:
                self._streams.remove(stream)
        stream.stop()

    def widget(self, **options: Any) -> Any:
        """A live `MonitorWidget` of the remote monitor (its controls act on the server)."""
        from ..widget import MonitorWidget

        return MonitorWidget.of(self, **options)

    def close(self) -> None:
        """Stop every subscription and close the connections."""
        with self._lock:
            streams, self._streams = self._streams, []
        for stream in streams:
            stream.stop()
        self._http.close()

    def __enter__(self) -> RemoteMonitor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteMonitor({self.url})"


class _Stream:
    """One WebSocket connection, read by its own thread, reconnecting until stopped."""

    def __init__(self, remote: RemoteMonitor, snapshots: bool,
                 listener: Callable[[str, types.MonitorState], None] | None = None) -> None:
        self.remote = remote
        self.snapshots = snapshots
        self.listener = listener
        self.subscription: Subscription | None = None
        self.error: str | None = None  # why it stopped trying, if it did
        self.connected = threading.Event()  # set once the server's greeting arrived
        self._stopped = threading.Event()
        self._ws: Any = None
        self._send_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="featmon-remote", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()
        if self._thread is not threading.current_thread() and self._thread.is_alive():
            self._thread.join(5.0)

    def send_options(self, options: SnapshotOptions) -> None:
        ws = self._ws
        if ws is None:
            return  # sent on (re)connection
        with self._send_lock, contextlib.suppress(Exception):
            ws.send(json.dumps({"type": "subscribe", **options._asdict()}))

    def _run(self) -> None:
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        attempt = 0
        while not self._stopped.is_set():
            try:
                with connect(self.remote.ws_url, additional_headers=self.remote._headers,
                             max_size=1 << 22, open_timeout=10) as ws:
                    self._ws = ws
                    attempt = 0
                    if self.subscription is not None:
                        self.send_options(self.subscription.options())
                    for text in ws:
                        self._dispatch(json.loads(text))
            except InvalidStatus as exc:  # refused (token): retrying will not help
                self.error = f"the server refused the connection ({exc.response.status_code})"
                return
            except Exception as exc:  # dropped or not reachable: try again
                self.error = f"{type(exc).__name__}: {exc}"
            finally:
                self._ws = None
                self.connected.clear()
            self._stopped.wait(RETRY_S[min(attempt, len(RETRY_S) - 1)])
            attempt += 1

    def _dispatch(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event == "hello":  # the server has registered us: no later event is missed
            self.connected.set()
        elif event == "snapshot" and self.subscription is not None:
            self.subscription.deliver(wire.snapshot_from(message["snapshot"]))
        elif event == "monitoring_state_changed" and self.listener is not None:
            with contextlib.suppress(Exception):  # a failing listener must not end the stream
                self.listener(message["change"], wire.state_from(message["state"]))
