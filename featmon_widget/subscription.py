"""A snapshot subscription: who receives snapshots, and which table/records they want."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import check_int
from .stats import METRICS

TABLE_ROWS_RANGE = (1, 200)


def check_snapshot_options(table_rows: Any, metric: Any, records: Any, max_records: int) -> None:
    """Raise ValueError/TypeError naming a bad snapshot option."""
    check_int("table_rows", table_rows, *TABLE_ROWS_RANGE)
    check_int("records", records, 0, max_records)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")


@dataclass
class Subscription:
    """Delivers snapshots built with these options to `callback`; `cancel()` stops it."""

    callback: Callable[[Any], None]
    table_rows: int = 50
    metric: str = "mean"
    records: int = 20
    _cancel: Callable[[Subscription], None] = field(default=lambda s: None, repr=False)
    _poke: Callable[[], None] = field(default=lambda: None, repr=False)

    def update(self, **options: Any) -> None:
        """Change table_rows / metric / records (validated first) and deliver soon."""
        from .snapshot import MAX_RECORDS

        unknown = sorted(set(options) - {"table_rows", "metric", "records"})
        if unknown:
            raise TypeError(f"unknown snapshot option(s): {', '.join(unknown)}")
        merged = {"table_rows": self.table_rows, "metric": self.metric, "records": self.records,
                  **options}
        check_snapshot_options(merged["table_rows"], merged["metric"], merged["records"],
                               MAX_RECORDS)
        self.table_rows, self.metric, self.records = (
            merged["table_rows"], merged["metric"], merged["records"])
        self._poke()

    def options(self) -> tuple[int, str, int]:
        """(table_rows, metric, records)."""
        return self.table_rows, self.metric, self.records

    def cancel(self) -> None:
        """Stop deliveries to this callback."""
        self._cancel(self)
