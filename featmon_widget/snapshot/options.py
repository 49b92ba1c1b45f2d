"""What a snapshot holds and the options that shape it (table rows, ranking metric, records, a
search that filters the table)."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..checks import check_int
from ..types import METRICS

# The most a snapshot may take on the wire (`Snapshot.nbytes`): past it, panels lose their
# logits parts (`build.fit_snapshot`), the one part whose size the other budgets do not bound
# together with theirs.
SNAPSHOT_BYTES = 64 * 1024
# Table columns, in the order the frontend shows them.
TABLE_COLUMNS = ("mean", "mean_active", "max", "active_ratio", "count", "active_count", "std")
TABLE_ROWS_RANGE = (1, 200)
MAX_SEARCH_CHARS = 200
# Top features (and monitored values) listed per record in a snapshot; the full record stays
# in get_history. With at most MAX_RECORDS records this keeps a snapshot under 64 KB.
RECORD_TOP = 12
MAX_RECORDS = 50
# Feature labels in the table are cut to this many characters, and given to rows in order while
# they fit in this many bytes (the full text stays in get_statistics).
TABLE_LABEL_CHARS = 32
TABLE_LABEL_BYTES = 4_000
# The top tokens of rows without a label (`top_tokens`) are given in order while they fit in
# this many bytes plus what the labels left unused of theirs (labels and top tokens share).
TABLE_TOP_TOKEN_BYTES = 1_000
# Feature panels (the selected features): examples each, a token's text cut to this many
# characters, and the bytes all panels may take in a message (examples are dropped from the
# end until they fit).
PANEL_EXAMPLES = 5
# Sampled activating tokens a panel shows, and the bytes (escaped JSON) all panels' samples
# may take besides the examples' budget.
PANEL_SAMPLES = 2
PANEL_SAMPLE_BYTES = 800
PANEL_TOKEN_CHARS = 16
PANEL_LABEL_CHARS = 80
PANEL_BYTES = 8_000
# "Fires with" in each panel: the top co-firing features (by Jaccard), their labels cut to
# this many characters, and the bytes all panels' lists may take (rows dropped from the end).
PANEL_COFIRING = 10
PANEL_COFIRING_LABEL_CHARS = 16
PANEL_COFIRING_BYTES = 3_000
# "Promotes / suppresses" in each panel (when an unembedding is known): the top and bottom
# tokens of the feature's logit effects, each side, their text cut to this many characters,
# with the histogram over the vocabulary; all panels' parts within their own byte budget (over
# it, PANEL_LOGITS_MIN tokens a side, then parts dropped from the last panel).
PANEL_LOGITS = 5
PANEL_LOGITS_MIN = 3
PANEL_LOGIT_TOKEN_CHARS = 12
PANEL_LOGITS_BYTES = 5_500


class SnapshotOptions(NamedTuple):
    """How many table rows, ranked by which metric, how many recent records, and which
    features the table may list (`search`: empty for all)."""

    table_rows: int = 50
    metric: str = "mean"
    records: int = 20
    search: str = ""


def check_metric(metric: Any) -> str:
    """`metric` if it is one of `METRICS`, else a ValueError naming it."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return metric


def check_search(search: Any) -> str:
    """`search` stripped, if it is text of at most `MAX_SEARCH_CHARS`."""
    if not isinstance(search, str):
        raise TypeError(f"search must be text, got {type(search).__name__}")
    if len(search) > MAX_SEARCH_CHARS:
        raise ValueError(f"search must be at most {MAX_SEARCH_CHARS} characters, got "
                         f"{len(search)}")
    return search.strip()


def snapshot_options(table_rows: Any, metric: Any, records: Any,
                     search: Any = "") -> SnapshotOptions:
    """Checked options, or a ValueError/TypeError naming the bad one."""
    return SnapshotOptions(check_int("table_rows", table_rows, *TABLE_ROWS_RANGE),
                           check_metric(metric), check_int("records", records, 0, MAX_RECORDS),
                           check_search(search))


def matches(search: str, labels: dict[int, str], d_sae: int) -> list[int]:
    """Features a table search finds, in index order: the feature whose index it is, and every
    feature whose label contains it (ignoring case)."""
    needle = search.casefold()
    found = {f for f, label in labels.items() if needle in label.casefold()}
    if search.isdigit() and int(search) < d_sae:
        found.add(int(search))
    return sorted(found)
