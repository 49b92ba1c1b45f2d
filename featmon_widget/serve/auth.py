"""Who may use a served monitor: a token (made like Jupyter's when none is given), checked in
constant time on every request before anything runs, and bounded request bodies.

HTTP requests carry it as `Authorization: Bearer <token>`; a WebSocket may instead put it in
the query (`?token=`), since browsers cannot set headers on one. A token in the query of an
HTTP request is refused (403): query strings end up in logs and browser history.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Paths anyone may read: the API's description, never its data.
PUBLIC_PATHS = frozenset({"/docs", "/openapi.json"})
MAX_BODY_BYTES = 64 * 1024  # the largest valid body (256 features) is a few KB


def new_token() -> str:
    """A random token, 48 hex digits (Jupyter's form)."""
    return secrets.token_hex(24)


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (an unknown name counts as not loopback)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str) -> None:
    """Refuse to serve beyond this machine without a token."""
    if not token and not is_loopback(host):
        raise ValueError(f"refusing to serve on {host!r} (not a loopback address) without a "
                         "token: pass token=None for a generated one, or a secret of your own")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _loopback_host_header(scope: Scope) -> bool:
    """Whether the request names this machine in its Host header. Without a token that is the
    only defence against DNS rebinding (a web page whose name resolves to 127.0.0.1)."""
    host = _header(scope, b"host") or ""
    # "[::1]:8765", or "127.0.0.1:8765" / "localhost"
    name = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
    return is_loopback(name)


def _verdict(scope: Scope, token: str) -> tuple[int, str] | None:
    """None when the request may pass, else (status, reason)."""
    if not token:
        if _loopback_host_header(scope):
            return None
        return 403, "without a token only requests to a loopback host name are served"
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    header = _header(scope, b"authorization")
    offered = None
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return 401, "the Authorization header must be 'Bearer <token>'"
        offered = value.strip()
    elif "token" in query:
        if scope["type"] != "websocket":
            return 403, ("a token in the query is accepted on the WebSocket only: send "
                         "'Authorization: Bearer <token>'")
        offered = query["token"][-1]
    if offered is None:
        return 401, "this monitor needs a token: send 'Authorization: Bearer <token>'"
    if not hmac.compare_digest(offered.encode(), token.encode()):
        return 403, "wrong token"
    return None


async def _send_json(send: Send, status: int, body: dict[str, Any],
                     start: str = "http.response") -> None:
    data = json.dumps(body).encode()
    await send({"type": f"{start}.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": f"{start}.body", "body": data})


class Guard:
    """ASGI middleware in front of the API: the token check and the body bound."""

    def __init__(self, app: ASGIApp, token: str, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        verdict = _verdict(scope, self.token)
        if scope["type"] == "websocket":
            if verdict is not None:
                await _deny_websocket(scope, receive, send, *verdict)
                return
            await self.app(scope, receive, send)
            return
        if verdict is not None:
            await _send_json(send, verdict[0], {"detail": verdict[1], "field": "token"})
            return
        await self._bounded(scope, receive, send)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the body (at most `max_body` bytes) before the app sees it, then replay it."""
        too_big = {"detail": f"request body over {self.max_body} bytes", "field": "body"}
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _send_json(send, 413, too_big)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                await _send_json(send, 413, too_big)
                return
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _deny_websocket(scope: Scope, receive: Receive, send: Send, status: int,
                          reason: str) -> None:
    """Refuse a WebSocket handshake: with the HTTP status and a JSON body where the server
    supports it (ASGI's denial response), else a plain 403."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await _send_json(send, status, {"detail": reason, "field": "token"},
                         start="websocket.http.response")
    else:
        await send({"type": "websocket.close", "code": 1008})
