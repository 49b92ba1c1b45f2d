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

import numpy as np
import torch

from .frequency import FREQUENCY_EDGES, frequency_histogram
from .options import RECORD_TOP, TABLE_COLUMNS, TABLE_LABEL_CHARS, SnapshotOptions
from .records import history_rows
from .schemas import MonitorState, Snapshot
from .source import SnapshotSource
from .transfer import start_copy


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
    options: SnapshotOptions
    state: MonitorState  # device totals filled in by `finish_snapshot`
    value_features: tuple[int, ...]
    value_edges: bytes
    monitored: tuple[int, ...]
    history_names: dict[int, str]
    token_text: Callable[[int], str | None]
    labels: dict[int, str]
    wait: Callable[[], list[torch.Tensor]]


def gather_snapshot(source: SnapshotSource, state: MonitorState, sequence: int,
                    options: SnapshotOptions, token_text: Callable[[int], str | None],
                    labels: dict[int, str]) -> SnapshotParts:
    """Enqueue every device computation and copy a snapshot needs; reads nothing back.
    The caller holds the monitor's lock; `state`'s device totals are filled in later, and
    `token_text` decodes the records' token ids after the lock is released. `labels` must not
    change afterwards (the monitor replaces its labels whole)."""
    index = source.ranked(options.metric, options.table_rows)
    columns = torch.stack([source.metric(name) for name in TABLE_COLUMNS]).index_select(1, index)
    freq, never_fired, never_seen = frequency_histogram(*source.firing_counts())
    values = source.value_histograms()
    tail = source.history_tail(options.records)
    device_parts = [*source.device_totals(), index, columns, freq, never_fired, never_seen,
                    values.counts, tail.held, *tail.columns]
    return SnapshotParts(
        sequence=sequence, options=options, state=state, value_features=values.features,
        value_edges=_f32(values.edges.numpy()), monitored=tail.monitored,
        history_names=tail.names, token_text=token_text, labels=labels,
        wait=start_copy(device_parts),
    )


def finish_snapshot(parts: SnapshotParts) -> Snapshot:
    """Wait for the copies (without the monitor's lock) and assemble the `Snapshot`."""
    (tokens, history_count, dropped, index, columns, freq, never_fired, never_seen, value_counts,
     held, *history_cols) = parts.wait()
    history = history_rows(history_cols, int(held), parts.history_names)
    threshold = parts.state.threshold
    latest = []
    for i in range(len(history) - 1, -1, -1):
        latest.append({
            "request_id": history.request_ids[i],
            "row": history.rows[i],
            "position": history.positions[i],
            "timestamp": history.timestamps[i],
            "token_id": history.token_ids[i] if history.token_ids[i] >= 0 else None,
            "token": parts.token_text(history.token_ids[i]),
            "top": [[f, _finite_or_none(v)]
                    for f, v in history.top_above(i, threshold)[:RECORD_TOP]],
            "values": [[f, _finite_or_none(v)]
                       for f, v in zip(parts.monitored, history.values[i], strict=True)
                       ][:RECORD_TOP],
        })
    return Snapshot(
        sequence=parts.sequence,
        timestamp=time.time(),
        state=dataclasses.replace(parts.state, total_tokens=int(tokens),
                                  history_count=int(history_count),
                                  dropped_indices=int(dropped)),
        table_metric=parts.options.metric,
        table_features=_i32(index.numpy()),
        table_columns={name: _f64(columns[j].numpy()) for j, name in enumerate(TABLE_COLUMNS)},
        frequency_edges=_f32(FREQUENCY_EDGES.numpy()),
        frequency_counts=_i32(freq.numpy()),
        never_fired=int(never_fired),
        never_seen=int(never_seen),
        value_features=_i32(list(parts.value_features)),
        value_edges=parts.value_edges,
        value_counts=_f64(value_counts.numpy().reshape(-1)),
        records=latest,
        table_labels=[_short(parts.labels.get(f)) for f in index.tolist()],
    )


def _short(label: str | None) -> str | None:
    """A label cut for the table (the full text stays in get_statistics / get_examples)."""
    if label is None or len(label) <= TABLE_LABEL_CHARS:
        return label
    return label[: TABLE_LABEL_CHARS - 1] + "…"
