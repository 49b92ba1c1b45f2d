"""Build the bounded `Snapshot` the frontend draws, with one small device-to-host copy each."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from .histograms import FREQUENCY_EDGES, VALUE_EDGES, frequency_histogram
from .schemas import Snapshot

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


def build_snapshot(monitor: FeatureMonitor, sequence: int, table_rows: int, metric: str,
                   records: int) -> Snapshot:
    """Snapshot of `monitor`; the caller holds the monitor's lock."""
    stats = monitor._stats
    index = monitor._ranked(metric, table_rows)
    columns = torch.stack([stats.metric(name) for name in TABLE_COLUMNS]).index_select(1, index)
    freq, never_fired, never_seen = frequency_histogram(stats.active_count, stats.count)
    host = [t.cpu() for t in (index, columns, freq, never_fired, never_seen,
                              monitor._values.counts)]
    index_h, columns_h, freq_h, never_fired_h, never_seen_h, value_counts_h = host

    history = monitor._history.read(last=records) if records else None
    threshold = monitor.config.threshold
    latest = []
    if history is not None:
        for i in range(len(history) - 1, -1, -1):
            top = [(f, v) for f, v in zip(history.top_idx[i], history.top_val[i], strict=True)
                   if f >= 0 and v > threshold][:RECORD_TOP]
            latest.append({
                "request_id": history.request_ids[i],
                "row": history.rows[i],
                "position": history.positions[i],
                "timestamp": history.timestamps[i],
                "top": [[f, _finite_or_none(v)] for f, v in top],
                "values": [[f, _finite_or_none(v)]
                           for f, v in zip(monitor._history.explicit, history.values[i],
                                           strict=True)][:RECORD_TOP],
            })
    return Snapshot(
        sequence=sequence,
        timestamp=time.time(),
        state=monitor.state,
        table_metric=metric,
        table_features=_i32(index_h.numpy()),
        table_columns={
            name: _f64(columns_h[j].numpy()) for j, name in enumerate(TABLE_COLUMNS)
        },
        frequency_edges=_f32(FREQUENCY_EDGES.numpy()),
        frequency_counts=_i32(freq_h.numpy()),
        never_fired=int(never_fired_h),
        never_seen=int(never_seen_h),
        value_features=_i32(list(monitor._values.features)),
        value_edges=_f32(VALUE_EDGES.numpy()),
        value_counts=_f64(value_counts_h.numpy().reshape(-1)),
        records=latest,
    )
