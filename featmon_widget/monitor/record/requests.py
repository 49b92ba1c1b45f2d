"""Which request a forward pass belongs to: the id set by `FeatureMonitor.request(...)` in this
context (thread or task), or a fresh automatic one per forward."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from ...checks import check_text, cut, is_int

# Request ids reach every snapshot and the widget: bounded, so one id cannot bloat them.
MAX_REQUEST_ID_CHARS = 200
# Named request ids remembered for the examples' records.
MAX_REQUEST_NAMES = 1 << 16
# Request codes are int64 on the device: a saved next code is bounded far below overflow.
MAX_CODE = 2**62


_AUTOMATIC = re.compile(r"auto-(0|[1-9][0-9]*)")
# `name/N`: row N of request `name` (a history filter, never a request's own id).
_ROW_SUFFIX = re.compile(r"(.+)/([0-9]+)")


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
    return check_text("request_id", request_id)


def check_new_request_id(request_id: object) -> str:
    """`check_request_id`, and not of the form `name/N`: that form names row N of request
    `name` in `get_history`, so a request may not be called so (a ValueError otherwise)."""
    checked = check_request_id(request_id)
    if _ROW_SUFFIX.fullmatch(checked):
        raise ValueError(f"request_id {cut(checked, 41)!r} ends in '/<number>', which names a "
                         f"row of a request in get_history; choose another id")
    return checked


def split_row(request_id: str) -> tuple[str, int] | None:
    """('name', N) for a `name/N` history filter, else None."""
    match = _ROW_SUFFIX.fullmatch(request_id)
    return (match.group(1), int(match.group(2))) if match else None


class RequestNames:
    """Request ids as int64 codes: automatic ids (`auto-N`) by their number, others interned.

    Bounded: past `MAX_REQUEST_NAMES` named ids, the names no kept example still holds are
    forgotten (`held()` lists the codes the table holds: one read of it, once per that many new
    names), so a held code never loses its name."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._names)

    def code(self, name: str, held: Callable[[], set[int]] | None = None) -> int:
        """The code of `name`."""
        auto = automatic_number(name)
        if auto is not None:
            if auto >= 2**63:
                raise ValueError(f"request_id {cut(name, 41)!r}: its number does not fit int64")
            return -1 - auto
        code = self._codes.get(name)
        if code is None:
            _check_code(self._next, name)
            if len(self._names) >= MAX_REQUEST_NAMES and held is not None:
                self._keep(held())
            code = self._codes[name] = self._next
            self._names[code] = name
            self._next += 1
        return code

    def name(self, code: int) -> str:
        """The request id of `code`."""
        return f"auto-{-1 - code}" if code < 0 else self._names.get(code, f"request #{code}")

    def state_meta(self) -> dict[str, object]:
        """The named ids with their codes, and the next code."""
        return {"names": [[c, n] for c, n in self._names.items()], "next": self._next}

    def load_state_meta(self, meta: dict[str, object]) -> None:
        """Restore `state_meta` (checked by the caller)."""
        self._names = {int(c): str(n) for c, n in meta["names"]}
        self._codes = {n: c for c, n in self._names.items()}
        self._next = int(meta["next"])

    def _keep(self, codes: set[int]) -> None:
        self._names = {c: n for c, n in self._names.items() if c in codes}
        self._codes = {n: c for c, n in self._names.items()}


class WriteNames:
    """The request ids of a ring's latest writes, by write code: a write older than the ring's
    last `keep` cannot still have a record there, so older names are forgotten. Thread-safe
    (snapshots read them from the delivery thread)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._names: OrderedDict[int, str] = OrderedDict()
        self._next = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._names)

    def register(self, request_id: str) -> int:
        """A fresh code for one write of `request_id`."""
        with self._lock:
            code = _check_code(self._next, request_id)
            self._next += 1
            self._names[code] = request_id
            while len(self._names) > self.keep:
                self._names.popitem(last=False)
        return code

    def snapshot(self) -> dict[int, str]:
        """code -> request id, now."""
        with self._lock:
            return dict(self._names)

    def clear(self) -> None:
        """Forget every name (codes keep counting)."""
        with self._lock:
            self._names.clear()

    def copy(self, keep: int) -> WriteNames:
        """The same names and next code, kept up to `keep`."""
        new = WriteNames(keep)
        with self._lock:
            new._names, new._next = OrderedDict(self._names), self._next
        return new

    def state_meta(self) -> dict[str, object]:
        """The names with their codes, and the next code."""
        with self._lock:
            return {"names": [[c, n] for c, n in self._names.items()], "next_code": self._next}

    def load_state_meta(self, meta: dict[str, Any]) -> None:
        """Restore `state_meta` (checked by the caller)."""
        with self._lock:
            self._names = OrderedDict((int(c), str(n)) for c, n in meta["names"])
            self._next = int(meta["next_code"])


def _check_code(code: int, request_id: str) -> int:
    """`code` if the device can store it (int64), else a ValueError before anything changed."""
    if not 0 <= code < 2**63:
        raise ValueError(f"request {cut(request_id, 41)!r} would get code {code}, which does not "
                         f"fit int64: the monitor's request numbering is exhausted")
    return code


def check_names_meta(meta: Any, next_key: str) -> None:
    """Raise ValueError unless `meta` is a `state_meta` of `RequestNames` (`next_key` "next")
    or `WriteNames` ("next_code"): [code, name] pairs and the next code."""
    if not isinstance(meta, dict):
        raise ValueError(f"request names must be an object, got {cut(repr(meta), 60)}")
    names, next_code = meta.get("names"), meta.get(next_key)
    if not isinstance(names, list) or not is_int(next_code):
        raise ValueError("request names must be a list and the next code an int")
    if not 0 <= next_code <= MAX_CODE:
        raise ValueError(f"{next_key} must be in 0..{MAX_CODE}, got {cut(repr(next_code), 40)}")
    for entry in names:
        if not (isinstance(entry, list) and len(entry) == 2 and is_int(entry[0])
                and 0 <= entry[0] < next_code and isinstance(entry[1], str)):
            raise ValueError(f"a request name must be [code, name] with a code in "
                             f"0..{next_key} - 1, got {cut(repr(entry), 60)}")
        check_request_id(entry[1])


class RequestContext:
    """The request id of the current context; `auto-N` outside any `request` block."""

    def __init__(self, name: str) -> None:
        self._current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            name, default=None)
        self._auto_ids = itertools.count()
        self._auto_lock = threading.Lock()

    def request(self, request_id: str) -> contextlib.AbstractContextManager[str]:
        """Tag everything recorded inside the block with `request_id` (checked now, not at
        the `with`)."""
        return self._tagged(check_new_request_id(request_id))

    @contextlib.contextmanager
    def _tagged(self, request_id: str) -> Iterator[str]:
        token = self._current.set(request_id)
        try:
            yield request_id
        finally:
            self._current.reset(token)

    def current(self) -> str:
        """The active request id, or a fresh automatic one (`auto-N`) for one forward pass."""
        request_id = self._current.get()
        if request_id is not None:
            return request_id
        with self._auto_lock:
            return f"auto-{next(self._auto_ids)}"

    def next_automatic(self) -> int:
        """N of the next automatic id `auto-N`."""
        with self._auto_lock:
            n = next(self._auto_ids)
            self._auto_ids = itertools.count(n)
        return n

    def continue_from(self, n: int) -> None:
        """Number automatic ids from `n` on (a loaded monitor goes on where the saved one
        stopped, so no `auto-N` names two requests)."""
        with self._auto_lock:
            self._auto_ids = itertools.count(n)
