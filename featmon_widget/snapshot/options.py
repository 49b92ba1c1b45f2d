"""What a snapshot holds and the options that size it (table rows, ranking metric, records)."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..checks import check_int
from .schemas import METRICS

# Table columns, in the order the frontend shows them.
TABLE_COLUMNS = ("mean", "mean_active", "max", "active_ratio", "count", "active_count", "std")
TABLE_ROWS_RANGE = (1, 200)
# Top features (and monitored values) listed per record in a snapshot; the full record stays
# in get_history. With at most MAX_RECORDS records this keeps a snapshot under 64 KB.
RECORD_TOP = 12
MAX_RECORDS = 50
# Feature labels in the table are cut to this many characters, and given to rows in order while
# they fit in this many bytes (the full text stays in get_statistics).
TABLE_LABEL_CHARS = 32
TABLE_LABEL_BYTES = 4_000
# Feature panels (the selected features): examples each, a token's text cut to this many
# characters, and the bytes all panels may take in a message (examples are dropped from the
# end until they fit).
PANEL_EXAMPLES = 5
PANEL_TOKEN_CHARS = 16
PANEL_LABEL_CHARS = 80
PANEL_BYTES = 8_000


class SnapshotOptions(NamedTuple):
    """How many table rows, ranked by which metric, and how many recent records."""

    table_rows: int = 50
    metric: str = "mean"
    records: int = 20


def check_metric(metric: Any) -> str:
    """`metric` if it is one of `METRICS`, else a ValueError naming it."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return metric


def snapshot_options(table_rows: Any, metric: Any, records: Any) -> SnapshotOptions:
    """Checked options, or a ValueError/TypeError naming the bad one."""
    return SnapshotOptions(check_int("table_rows", table_rows, *TABLE_ROWS_RANGE),
                           check_metric(metric), check_int("records", records, 0, MAX_RECORDS))
