"""A snapshot subscription: who receives snapshots, and which table/records they want."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..snapshot.options import SnapshotOptions, snapshot_options
from ..snapshot.schemas import Snapshot


class Subscription:
    """Delivers snapshots built with its options to `callback`; `cancel()` stops it."""

    def __init__(self, callback: Callable[[Snapshot], None], options: SnapshotOptions,
                 cancel: Callable[[Subscription], None], poke: Callable[[], None]) -> None:
        self.callback = callback
        self._options = options
        self._cancel = cancel
        self._poke = poke

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
