"""The WebSocket side: the monitor's throttled deliveries and state changes, fanned out to
every connected client without the monitor ever waiting for one.

The monitor's delivery thread (and whichever thread ran an operation) only serialises an event
once and hands it to the server's event loop (`call_soon_threadsafe`, which never blocks).
There each client has a bounded queue: `snapshot` and `activation_update` events replace a
waiting one of their kind (a slow client is coalesced to the latest), state changes queue up,
and a client whose queue overflows, or whose send has been stuck for `stall_s`, is dropped.
The events are throttled by the monitor itself (leading and trailing edge), so the last state
of a burst always arrives.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from ..live.subscriptions import Subscription
from ..snapshot.options import SnapshotOptions, snapshot_options
from ..snapshot.schemas import Snapshot
from ..types import MonitorState
from . import wire

COALESCED = ("snapshot", "activation_update")  # only the latest of these matters
MAX_QUEUE = 64  # state changes waiting for one client before it is dropped
STALL_S = 10.0  # a send stuck this long (the client reads nothing) drops the client
MAX_CLIENT_MESSAGE = 4096  # bytes a client may send in one message (options only)


class Client:
    """One WebSocket client: its queue and the task that writes it (on the event loop)."""

    def __init__(self, send_text: Callable[[str], Any], max_queue: int = MAX_QUEUE,
                 stall_s: float = STALL_S) -> None:
        self.send_text = send_text
        self.max_queue = max_queue
        self.stall_s = stall_s
        self.queue: collections.deque[tuple[str, str]] = collections.deque()
        self.wake = asyncio.Event()
        self.sending_since: float | None = None
        self.sent = 0
        self.coalesced = 0
        self.dropped: str | None = None  # why, once dropped
        self.gone = asyncio.Event()  # set when dropped: the endpoint closes the connection
        self.subscription: Subscription | None = None  # its snapshot subscription, if any

    def offer(self, kind: str, text: str) -> None:
        """Queue one event (never waits); coalesce or drop when the client is behind."""
        if self.dropped is not None:
            return
        if self.sending_since is not None and time.monotonic() - self.sending_since > self.stall_s:
            self.drop(f"stalled: one send took over {self.stall_s:g} s")
            return
        if kind in COALESCED:
            for i, (queued, _) in enumerate(self.queue):
                if queued == kind:
                    del self.queue[i]
                    self.coalesced += 1
                    break
        if len(self.queue) >= self.max_queue:
            self.drop(f"fell behind: {len(self.queue)} events waiting")
            return
        self.queue.append((kind, text))
        self.wake.set()

    def drop(self, reason: str) -> None:
        """Stop serving this client; its writer ends and the connection is closed."""
        self.dropped = reason
        self.queue.clear()
        self.wake.set()
        self.gone.set()

    async def write(self) -> None:
        """Send queued events in order until the client is dropped."""
        while self.dropped is None:
            await self.wake.wait()
            self.wake.clear()
            while self.queue and self.dropped is None:
                _, text = self.queue.popleft()
                self.sending_since = time.monotonic()
                await self.send_text(text)
                self.sending_since = None
                self.sent += 1


class Hub:
    """Clients of one served monitor. `start` (on the event loop) subscribes to the monitor;
    `stop` unsubscribes. Counters: `clients`, `dropped`."""

    def __init__(self, monitor: Any, max_queue: int = MAX_QUEUE,
                 stall_s: float = STALL_S) -> None:
        self.monitor = monitor
        self.max_queue = max_queue
        self.stall_s = stall_s
        self.clients: set[Client] = set()
        self.dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscription: Subscription | None = None
        self._unlisten: Callable[[], None] | None = None
        self._last_record: tuple[Any, ...] | None = None
        # The text of the snapshot delivered last: every client subscribed with the same
        # options gets the same Snapshot object, serialised once for all of them.
        self._text_of: tuple[tuple[int, float], str] | None = None

    # ---- monitor threads -> event loop ------------------------------------------------------

    def start(self) -> None:
        """Listen to the monitor's state changes (call on the event loop). Its snapshots are
        followed only while a client is connected: an idle server builds none."""
        self._loop = asyncio.get_running_loop()
        self._unlisten = self.monitor.on_state_change(self._on_state)

    def stop(self) -> None:
        """Stop listening to the monitor and end every client."""
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        if self._unlisten is not None:
            self._unlisten()
        for client in list(self.clients):
            self._forget(client)
            client.drop("the server is shutting down")
        self._loop = None

    def _post(self, kind: str, text: str, only: Client | None = None) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._fan_out, kind, text, only)

    def _fan_out(self, kind: str, text: str, only: Client | None) -> None:
        for client in [only] if only is not None else list(self.clients):
            client.offer(kind, text)
            if client.dropped is not None:
                self._forget(client)

    def _on_state(self, event: str, state: MonitorState) -> None:
        self._post("monitoring_state_changed", wire.dumps(state_event(event, state)))

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        if not snapshot.records:
            return
        newest = snapshot.records[0]
        key = (newest["request_id"], newest["row"], newest["position"], newest["timestamp"])
        if key == self._last_record:
            return  # nothing recorded since the last event
        self._last_record = key
        self._post("activation_update", wire.dumps(activation_event(newest)))

    # ---- clients ----------------------------------------------------------------------------

    def connect(self, send_text: Callable[[str], Any], state: MonitorState) -> Client:
        """A new client, greeted with the current `state` (read off the event loop: it waits
        for the monitor's lock)."""
        client = Client(send_text, self.max_queue, self.stall_s)
        self.clients.add(client)
        client.offer("hello", wire.dumps({"event": "hello", "state": state}))
        if self._subscription is None:  # the first client: follow the recording
            self._subscription = self.monitor.subscribe(self._on_snapshot, table_rows=1,
                                                        records=1)
        return client

    def disconnect(self, client: Client) -> None:
        """The client went away (or was dropped)."""
        if client.dropped is None:
            client.drop("disconnected")
        self._forget(client)

    def _forget(self, client: Client) -> None:
        if client in self.clients:
            self.clients.discard(client)
            if client.dropped not in ("disconnected", "the server is shutting down"):
                self.dropped += 1
        if client.subscription is not None:
            client.subscription.cancel()
            client.subscription = None
        if not self.clients and self._subscription is not None:  # the last one left
            self._subscription.cancel()
            self._subscription = None

    def handle(self, client: Client, text: str) -> None:
        """A message from the client: `{"type": "subscribe", table_rows, metric, records,
        search}` asks for `snapshot` events with those options (again: new options),
        `{"type": "unsubscribe"}` stops them. A bad one is answered with an `error` event."""
        try:
            self._apply(client, text)
        except (ValueError, TypeError) as exc:
            client.offer("error", wire.dumps({"event": "error", "detail": str(exc)[:500]}))

    def _apply(self, client: Client, text: str) -> None:
        if len(text) > MAX_CLIENT_MESSAGE:
            raise ValueError(f"message over {MAX_CLIENT_MESSAGE} characters")
        try:
            message = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"a message must be JSON ({exc.msg})") from None
        if not isinstance(message, dict) or message.get("type") not in ("subscribe",
                                                                        "unsubscribe"):
            raise ValueError("a message must be {\"type\": \"subscribe\" | \"unsubscribe\", ...}")
        if message["type"] == "unsubscribe":
            if client.subscription is not None:
                client.subscription.cancel()
                client.subscription = None
            return
        unknown = sorted(set(message) - {"type", *SnapshotOptions._fields})
        if unknown:
            raise ValueError(f"unknown subscribe option(s): {', '.join(unknown)}")
        defaults = SnapshotOptions()._asdict()
        options = snapshot_options(**{k: message.get(k, v) for k, v in defaults.items()})
        if client.subscription is not None:
            client.subscription.update(**options._asdict())
            return

        def deliver(snapshot: Snapshot) -> None:
            self._post("snapshot", self._snapshot_text(snapshot), only=client)

        client.subscription = self.monitor.subscribe(deliver, **options._asdict())


    def _snapshot_text(self, snapshot: Snapshot) -> str:
        key = (snapshot.sequence, snapshot.timestamp)
        cached = self._text_of
        if cached is None or cached[0] != key:
            text = wire.dumps({"event": "snapshot", "snapshot": wire.snapshot_message(snapshot)})
            cached = self._text_of = (key, text)
        return cached[1]


def state_event(event: str, state: MonitorState) -> dict[str, Any]:
    """`monitoring_state_changed`: what happened (`change`), the original's state fields at
    the top level and the whole state under `state`."""
    return {"event": "monitoring_state_changed", "change": event, "enabled": state.enabled,
            "sae_attached": state.sae_attached, "sae_id": state.sae_id,
            "monitored_features": state.monitored_features,
            "history_size": state.history_size, "history_count": state.history_count,
            "state": state}


def activation_event(record: dict[str, Any]) -> dict[str, Any]:
    """`activation_update` from a snapshot's newest record: the original's `timestamp,
    features [{idx, value}], request_id, position` (the token's real position, not 0), and
    `row`, `token`."""
    return {"event": "activation_update", "timestamp": record["timestamp"],
            "features": [{"idx": f, "value": v} for f, v in record["top"]],
            "request_id": record["request_id"], "position": record["position"],
            "row": record["row"], "token": record.get("token")}
