"""`MonitorServer`: uvicorn serving one monitor from a background thread of the process that
owns the model. The socket is bound in the caller's thread (a taken port fails there, and
port 0 is known at once); `close()` stops the server, joins the thread and releases the port."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import uvicorn

from .app import create_app
from .auth import MAX_BODY_BYTES, check_bind, new_token
from .hub import MAX_QUEUE, STALL_S, Hub

START_TIMEOUT_S = 30.0


class MonitorServer:
    """Serves `monitor` at `url` (REST under /api/monitoring, events at /api/monitoring/ws).

    `token=None` makes one (printed once); `token=""` serves without one, which only a loopback
    address may. Use as a context manager, or call `close()`.
    """

    def __init__(self, monitor: Any, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, *, cors_origins: Sequence[str] = (),
                 max_body: int = MAX_BODY_BYTES, max_queue: int = MAX_QUEUE,
                 stall_s: float = STALL_S, quiet: bool = False) -> None:
        if token is not None and not isinstance(token, str):
            raise TypeError(f"token must be text or None, got {type(token).__name__}")
        generated = token is None
        self.token = new_token() if token is None else token
        check_bind(host, self.token)
        self.host = host
        self.hub = Hub(monitor, max_queue=max_queue, stall_s=stall_s)
        app, _ = create_app(monitor, self.token, cors_origins=cors_origins, max_body=max_body,
                            hub=self.hub)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY on accepted sockets only when the
        # listening socket says TCP (proto 0 left Nagle on: 40 ms per response).
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host.strip("[]"), port))
        except OSError:
            self._socket.close()
            raise
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="websockets-sansio",
                                ws_max_size=1 << 16, timeout_graceful_shutdown=2,
                                access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"featmon-serve-{self.port}",
                                        daemon=True)
        self._error: BaseException | None = None
        self._thread.start()
        self._wait_started()
        if generated and not quiet:
            print(f"featmon: serving {self.url} - token {self.token} (use it as "
                  "'Authorization: Bearer <token>'; printed only now)", file=sys.stderr)

    @property
    def url(self) -> str:
        """The server's base URL (`http://host:port`)."""
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread.is_alive() and not self._server.should_exit

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # reported by the waiting caller
            self._error = exc

    def _wait_started(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        if not self._server.started:
            self.close()
            raise RuntimeError(f"the server did not start: {self._error!r}")

    def close(self) -> None:
        """Stop serving: clients are disconnected, the thread ends, the port is released."""
        self._server.should_exit = True
        if self._thread is not threading.current_thread():
            self._thread.join(START_TIMEOUT_S)
        self._socket.close()

    def __enter__(self) -> MonitorServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MonitorServer({self.url}, clients={len(self.hub.clients)})"
