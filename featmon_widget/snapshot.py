"""Build the bounded `Snapshot` the frontend draws.

Two steps, so that a forward never waits behind a host read: `gather_snapshot` runs under the
monitor's lock and only enqueues small device computations and their copies to the host;
`finish_snapshot` waits for the copies after the lock is released and assembles the result.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .histograms import FREQUENCY_EDGES, VALUE_EDGES, frequency_histogram
from .history import HistoryRing
from .schemas import MonitorState, Snapshot
from .transfer import start_copy

if TYPE_CHECKING:
    from .monitor import FeatureMonitor

# Table columns, in the order the frontend shows them.
TABLE_COLUMNS = ("mean", "mean_active", "max", "active_ratio", "count", "active_count", "std")
# Top features (and explicit values) listed per record in a snapshot; the full record stays
# in get_history. With at most MAX_RECORDS records this keeps a snapshot under 64 KB.
RECORD_TOP = 12
MAX_RECORDS = 50


def _f32(values: object) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


def _f64(values: object) -> bytes:
    return np.asarray(values, dtype="<f8").tobytes()


def _i32(values: object) -> bytes:
    return np.asarray(values, dtype="<i4").tobytes()


def _finite_or_none(value: float) -> float | None:
    # Stored values are float32: nine significant digits restore them exactly, in fewer bytes.
    return float(f"{value:.9g}") if math.isfinite(value) else None


@dataclass
class SnapshotParts:
    """What a snapshot needs, gathered under the monitor's lock: host values, and device
    tensors whose copies to the host are already on their way (`wait` returns them)."""

    sequence: int
    table_rows: int
    metric: str
    state: MonitorState  # totals filled in by `finish_snapshot`
    value_features: tuple[int, ...]
    explicit: tuple[int, ...]
    threshold: float
    history_names: dict[int, str]
    wait: Callable[[], list[torch.Tensor]]


def gather_snapshot(monitor: FeatureMonitor, sequence: int, table_rows: int, metric: str,
                    records: int) -> SnapshotParts:
    """Enqueue every device computation and copy a snapshot needs; reads nothing back.
    The caller holds the monitor's lock."""
    stats = monitor._stats
    index = monitor._ranked(metric, table_rows)
    columns = torch.stack([stats.metric(name) for name in TABLE_COLUMNS]).index_select(1, index)
    freq, never_fired, never_seen = frequency_histogram(stats.active_count, stats.count)
    history_cols, held, names = monitor._history.gather_last(records)
    device_parts = [monitor._tokens, monitor._history.written.clamp_max(monitor._history.size),
                    monitor._stats.dropped_indices,
                    index, columns, freq, never_fired, never_seen, monitor._values.counts, held,
                    *history_cols]
    return SnapshotParts(
        sequence=sequence, table_rows=table_rows, metric=metric,
        state=monitor._state(total_tokens=0, history_count=0, dropped_indices=0),
        value_features=monitor._values.features, explicit=monitor._history.explicit,
        threshold=monitor.config.threshold, history_names=names,
        wait=start_copy(device_parts),
    )


def finish_snapshot(parts: SnapshotParts) -> Snapshot:
    """Wait for the copies (without the monitor's lock) and assemble the `Snapshot`."""
    (tokens, history_count, dropped, index, columns, freq, never_fired, never_seen, value_counts,
     held, *history_cols) = parts.wait()
    history = HistoryRing.rows_from(history_cols, int(held), parts.history_names)
    latest = []
    for i in range(len(history) - 1, -1, -1):
        top = [(f, v) for f, v in zip(history.top_idx[i], history.top_val[i], strict=True)
               if f >= 0 and v > parts.threshold][:RECORD_TOP]
        latest.append({
            "request_id": history.request_ids[i],
            "row": history.rows[i],
            "position": history.positions[i],
            "timestamp": history.timestamps[i],
            "top": [[f, _finite_or_none(v)] for f, v in top],
            "values": [[f, _finite_or_none(v)]
                       for f, v in zip(parts.explicit, history.values[i], strict=True)
                       ][:RECORD_TOP],
        })
    return Snapshot(
        sequence=parts.sequence,
        timestamp=time.time(),
        state=dataclasses.replace(parts.state, total_tokens=int(tokens),
                                  history_count=int(history_count),
                                  dropped_indices=int(dropped)),
        table_metric=parts.metric,
        table_features=_i32(index.numpy()),
        table_columns={name: _f64(columns[j].numpy()) for j, name in enumerate(TABLE_COLUMNS)},
        frequency_edges=_f32(FREQUENCY_EDGES.numpy()),
        frequency_counts=_i32(freq.numpy()),
        never_fired=int(never_fired),
        never_seen=int(never_seen),
        value_features=_i32(list(parts.value_features)),
        value_edges=_f32(VALUE_EDGES.numpy()),
        value_counts=_f64(value_counts.numpy().reshape(-1)),
        records=latest,
    )
