"""Which request a forward pass belongs to: the id set by `FeatureMonitor.request(...)` in this
context (thread or task), or a fresh automatic one per forward."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
from collections.abc import Iterator


class RequestContext:
    """The request id of the current context; `auto-N` outside any `request` block."""

    def __init__(self, name: str) -> None:
        self._current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            name, default=None)
        self._auto_ids = itertools.count()

    @contextlib.contextmanager
    def request(self, request_id: str) -> Iterator[str]:
        """Tag everything recorded inside the block with `request_id`."""
        if not isinstance(request_id, str) or not request_id:
            raise ValueError(f"request_id must be a non-empty string, got {request_id!r}")
        token = self._current.set(request_id)
        try:
            yield request_id
        finally:
            self._current.reset(token)

    def current(self) -> str:
        """The active request id, or a fresh automatic one (`auto-N`) for one forward pass."""
        return self._current.get() or f"auto-{next(self._auto_ids)}"
