"""Which request a forward pass belongs to: the id set by `FeatureMonitor.request(...)` in this
context (thread or task), or a fresh automatic one per forward."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import re
from collections.abc import Iterator

from ..checks import cut

# Request ids reach every snapshot and the widget: bounded, so one id cannot bloat them.
MAX_REQUEST_ID_CHARS = 200


_AUTOMATIC = re.compile(r"auto-(0|[1-9][0-9]*)")


def automatic_number(request_id: str) -> int | None:
    """N for the monitor's own per-forward ids (`auto-N`), else None. Such a request never
    continues (the next forward gets a new id), so no per-request state is kept for it."""
    match = _AUTOMATIC.fullmatch(request_id)
    return int(match.group(1)) if match else None


def check_request_id(request_id: object) -> str:
    """`request_id` if it is a non-empty string of at most `MAX_REQUEST_ID_CHARS` characters;
    a TypeError/ValueError naming it (cut short) otherwise."""
    if not isinstance(request_id, str):
        raise TypeError(f"request_id must be a string, got {type(request_id).__name__}")
    if not 0 < len(request_id) <= MAX_REQUEST_ID_CHARS:
        raise ValueError(f"request_id must have 1..{MAX_REQUEST_ID_CHARS} characters, got "
                         f"{len(request_id)} ({cut(request_id, 41)!r})")
    return request_id


class RequestContext:
    """The request id of the current context; `auto-N` outside any `request` block."""

    def __init__(self, name: str) -> None:
        self._current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            name, default=None)
        self._auto_ids = itertools.count()

    def request(self, request_id: str) -> contextlib.AbstractContextManager[str]:
        """Tag everything recorded inside the block with `request_id` (checked now, not at
        the `with`)."""
        return self._tagged(check_request_id(request_id))

    @contextlib.contextmanager
    def _tagged(self, request_id: str) -> Iterator[str]:
        token = self._current.set(request_id)
        try:
            yield request_id
        finally:
            self._current.reset(token)

    def current(self) -> str:
        """The active request id, or a fresh automatic one (`auto-N`) for one forward pass."""
        return self._current.get() or f"auto-{next(self._auto_ids)}"
