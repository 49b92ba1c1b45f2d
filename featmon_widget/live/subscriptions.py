"""A snapshot subscription: who receives snapshots, and which table/records they want."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..checks import cut
from ..snapshot.options import SnapshotOptions, snapshot_options
from ..snapshot.schemas import Snapshot

ERROR_CHARS = 300  # an error message kept for the state / status line


def short_error(exc: BaseException) -> str:
    """`Type: message`, cut to `ERROR_CHARS` characters."""
    return str(cut(f"{type(exc).__name__}: {exc}", ERROR_CHARS))


class Subscription:
    """Delivers snapshots built with its options to `callback`; `cancel()` stops it."""

    def __init__(self, callback: Callable[[Snapshot], None], options: SnapshotOptions,
                 cancel: Callable[[Subscription], None], poke: Callable[[], None]) -> None:
        self.callback = callback
        self._options = options
        self._cancel = cancel
        self._poke = poke
        self.errors = 0  # deliveries whose callback raised
        self.last_error: str | None = None

    def deliver(self, snapshot: Snapshot) -> bool:
        """Hand `snapshot` to the callback; an exception it raises is counted here (and
        returned as False), never passed on: one broken subscriber must not stop the others."""
        try:
            self.callback(snapshot)
        except Exception as exc:
            self.errors += 1
            self.last_error = short_error(exc)
            return False
        return True

    @property
    def table_rows(self) -> int:
        """Rows of the top-features table."""
        return self._options.table_rows

    @property
    def metric(self) -> str:
        """The metric the table is ranked by."""
        return self._options.metric

    @property
    def records(self) -> int:
        """Recent records per snapshot."""
        return self._options.records

    @property
    def search(self) -> str:
        """The table search ("" for none)."""
        return self._options.search

    def update(self, **options: Any) -> None:
        """Change table_rows / metric / records / search (validated first) and deliver soon."""
        unknown = sorted(set(options) - set(SnapshotOptions._fields))
        if unknown:
            raise TypeError(f"unknown snapshot option(s): {', '.join(unknown)}")
        self._options = snapshot_options(**{**self._options._asdict(), **options})
        self._poke()

    def options(self) -> SnapshotOptions:
        """(table_rows, metric, records, search)."""
        return self._options

    def cancel(self) -> None:
        """Stop deliveries to this callback."""
        self._cancel(self)

    def __repr__(self) -> str:
        return f"Subscription({self._options})"
