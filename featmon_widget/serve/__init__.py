"""A monitor served over HTTP and a WebSocket (`MonitorServer`, from `monitor.serve()`), and the
client that watches it from another process (`RemoteMonitor`).

Needs the `serve` extra (`pip install 'featmon_widget[serve]'`): FastAPI and uvicorn for the
server, httpx and websockets for the client. Each is imported only when used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MonitorServer", "RemoteMonitor"]


def __getattr__(name: str) -> Any:
    if name == "MonitorServer":
        from .server import MonitorServer

        return MonitorServer
    if name == "RemoteMonitor":
        from .remote import RemoteMonitor

        return RemoteMonitor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
