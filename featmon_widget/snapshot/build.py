"""Build the bounded `Snapshot` the frontend draws.

Two steps, so that a forward never waits behind a host read: `gather_snapshot` runs under the
monitor's lock and only enqueues small device computations and their copies to the host;
`finish_snapshot` waits for the copies after the lock is released and assembles the result.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..checks import cut
from ..types import LogitsResponse, MonitorState
from .frequency import FREQUENCY_BIN_COUNT, FREQUENCY_EDGES, NEVER_FIRED, NEVER_SEEN
from .logits_part import drop_logits, with_logits
from .options import (
    PANEL_BYTES,
    PANEL_COFIRING,
    PANEL_COFIRING_BYTES,
    PANEL_COFIRING_LABEL_CHARS,
    PANEL_EXAMPLES,
    PANEL_LABEL_CHARS,
    PANEL_SAMPLE_BYTES,
    PANEL_SAMPLES,
    PANEL_TOKEN_CHARS,
    RECORD_TOP,
    SNAPSHOT_BYTES,
    TABLE_COLUMNS,
    TABLE_LABEL_BYTES,
    TABLE_LABEL_CHARS,
    TABLE_TOP_TOKEN_BYTES,
    SnapshotOptions,
    matches,
)
from .records import history_rows, known_window
from .schemas import Snapshot
from .source import CoFiringTop, ExampleSlices, SnapshotSource
from .top_tokens import descriptors
from .transfer import start_copy
from .value_bins import DIST_LOG_BINS, NOMINAL_EDGES, QUANTILES, bin_quantiles

# Per selected feature in its panel, in this order.
PANEL_STATS = ("count", "active_ratio", "mean_active", "max")
# Tokens kept each side of an example's activating token when panels must shrink.
PANEL_NARROW = 2


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
    examples: ExampleSlices
    samples: ExampleSlices
    cofiring: CoFiringTop
    firing: torch.Tensor  # the firing summary, on the device: shared with the health strip
    wait: Callable[[], list[torch.Tensor]]
    logits: Mapping[int, LogitsResponse] = field(default_factory=dict)  # by selected feature


def gather_snapshot(source: SnapshotSource, state: MonitorState, sequence: int,
                    options: SnapshotOptions, token_text: Callable[[int], str | None],
                    labels: dict[int, str],
                    logits: Mapping[int, LogitsResponse] | None = None) -> SnapshotParts:
    """Enqueue every device computation and copy a snapshot needs; reads nothing back.
    The caller holds the monitor's lock; `state`'s device totals are filled in later, and
    `token_text` decodes the records' token ids after the lock is released. `labels` must not
    change afterwards (the monitor replaces its labels whole). `logits`: the selected
    features' logit effects, computed (once, cached) by the caller before taking the lock."""
    among = matches(options.search, labels, state.d_sae) if options.search else None
    index = source.ranked(options.metric, options.table_rows, among)
    columns = source.metrics_at(TABLE_COLUMNS, index)  # only the table's rows: O(rows)
    centre = source.example_tokens(index)  # the rows' top tokens, from their kept examples
    firing = source.firing_summary()
    values = source.value_histograms()
    tail = source.history_tail(options.records)
    examples = source.examples_of(values.features, PANEL_EXAMPLES)
    samples = source.samples_of(values.features, PANEL_SAMPLES)
    selected = torch.tensor(values.features, dtype=torch.int64, device=index.device)
    panel_stats = source.metrics_at(PANEL_STATS, selected)
    cofiring = source.cofiring_top(PANEL_COFIRING)
    device_parts = [*source.device_totals(), index, columns, centre, firing, values.counts,
                    panel_stats, *examples.columns, *samples.columns, *cofiring[1:], tail.held,
                    *tail.columns]
    return SnapshotParts(
        sequence=sequence, options=options, state=state, value_features=values.features,
        value_edges=_f32(NOMINAL_EDGES.numpy()), monitored=tail.monitored,
        history_names=tail.names, token_text=token_text, labels=labels, examples=examples,
        samples=samples, cofiring=cofiring, firing=firing, wait=start_copy(device_parts),
        logits=logits or {},
    )


def finish_snapshot(parts: SnapshotParts) -> Snapshot:
    """Wait for the copies (without the monitor's lock) and assemble the `Snapshot`."""
    (tokens, history_count, dropped, records_dropped, index, columns, centre, firing,
     value_counts, panel_stats, *rest) = parts.wait()
    ex_columns, sample_columns, rest = rest[:6], rest[6:12], rest[12:]
    co_counts, co_jaccard, co_totals, held, *history_cols = rest
    history = history_rows(history_cols, int(held), parts.history_names)
    features = index.tolist()
    labels = _table_labels(parts.labels, features)
    threshold = parts.state.threshold
    latest = []
    for i in range(len(history) - 1, -1, -1):
        latest.append({
            "request_id": history.request_ids[i],
            "row": history.rows[i],
            "position": history.positions[i],
            "timestamp": history.timestamps[i],
            "token_id": history.token_ids[i] if history.token_ids[i] >= 0 else None,
            "token": cut(parts.token_text(history.token_ids[i]), PANEL_TOKEN_CHARS),
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
                                  dropped_indices=int(dropped),
                                  records_dropped=int(records_dropped)),
        table_metric=parts.options.metric,
        table_search=parts.options.search,
        table_features=_i32(index.numpy()),
        table_columns={name: _f64(columns[j].numpy()) for j, name in enumerate(TABLE_COLUMNS)},
        frequency_edges=_f32(FREQUENCY_EDGES.numpy()),
        frequency_counts=_i32(firing[:FREQUENCY_BIN_COUNT].numpy()),
        never_fired=int(firing[NEVER_FIRED]),
        never_seen=int(firing[NEVER_SEEN]),
        value_features=_i32(list(parts.value_features)),
        value_edges=parts.value_edges,
        value_counts=_f64(value_counts.numpy().reshape(-1)),
        records=latest,
        table_labels=labels,
        table_top_tokens=_table_top_tokens(parts, features, centre.tolist(), _label_bytes(labels)),
        feature_panels=with_logits(_with_cofiring(
            _panels(parts, panel_stats, ex_columns, sample_columns, value_counts.tolist()),
            parts, [co_counts, co_jaccard, co_totals]), parts.logits),
    )


def _panels(parts: SnapshotParts, stats: torch.Tensor, columns: list[torch.Tensor],
            sample_columns: list[torch.Tensor],
            value_counts: list[list[int]]) -> list[dict[str, Any]]:
    """One panel per selected feature: its label, a few statistics, the quantiles of its
    active values (`quantiles`: [[q, value], ...] from its distribution, None when it never
    fired), its best examples and (as `samples`, each marked `"sampled": true`) a uniform
    sample of its activating tokens, as token text with the feature's activation on each
    token; within `PANEL_BYTES`."""
    top = _example_dicts(parts, parts.examples, columns)
    sampled = _example_dicts(parts, parts.samples, sample_columns)
    stats_h = stats.tolist()
    panels = []
    for s, feature in enumerate(parts.examples.features):
        panels.append({
            "feature": feature, "label": cut(parts.labels.get(feature), PANEL_LABEL_CHARS),
            **{name: _finite_or_none(stats_h[j][s]) for j, name in enumerate(PANEL_STATS)},
            "count": int(stats_h[0][s]),
            "quantiles": _quantiles(value_counts[s][1:], parts.state.threshold,
                                    stats_h[PANEL_STATS.index("max")][s]),
            "examples": top[s],
        })
    for panel, samples in zip(panels, sampled, strict=True):
        panel["samples"] = [{**e, "sampled": True} for e in samples]
        for sample in panel["samples"]:
            _narrow(sample, PANEL_NARROW)  # a short context: room for a sample a panel

    def samples() -> str:  # escaped, as the message sends them
        return json.dumps([p["samples"] for p in panels])

    def rest() -> str:
        return json.dumps([{k: v for k, v in p.items() if k != "samples"} for p in panels],
                          ensure_ascii=False) + samples()

    # The samples within their own bytes, then the examples in what is left of PANEL_BYTES.
    # Where the panels, escaped, still pass PANEL_BYTES (non-ASCII tokens, which the examples'
    # UTF-8 measure counts at half their escaped size) the samples give way; none: no entry.
    _trim(panels, "samples", PANEL_SAMPLE_BYTES, samples)
    _trim(panels, "examples", PANEL_BYTES, rest)
    while len(json.dumps(panels)) > PANEL_BYTES and any(p["samples"] for p in panels):
        max(panels, key=lambda p: len(p["samples"]))["samples"].pop()
    for panel in panels:
        if not panel["samples"]:
            del panel["samples"]
    return panels


def _trim(panels: list[dict[str, Any]], key: str, budget: int,
          text: Callable[[], str]) -> None:
    """Drop entries of the panels' `key` lists until `text()` fits `budget` bytes: fewer
    (down to one a list), then narrower windows, then fewer."""
    def size() -> int:
        return len(text().encode())

    def longest() -> list[dict[str, Any]]:
        return max((p[key] for p in panels), key=len, default=[])

    while size() > budget and len(longest()) > 1:
        longest().pop()
    if size() > budget:
        for example in (e for p in panels for e in p[key]):
            _narrow(example, PANEL_NARROW)
    while size() > budget and longest():
        longest().pop()


def _example_dicts(parts: SnapshotParts, slices: ExampleSlices,
                   columns: list[torch.Tensor]) -> list[list[dict[str, Any]]]:
    """Per feature of `slices`, its examples (`columns`, copied) as panel entries."""
    value, request, row, position, tokens, acts = (c.float().tolist() if c.is_floating_point()
                                                   else c.tolist() for c in columns)
    out = []
    for s in range(len(slices.features)):
        examples = []
        for i, v in enumerate(value[s]):
            if not math.isfinite(v):
                break  # empty slots come last
            ids, index, window_acts = known_window(tokens[s][i], acts[s][i], slices.window)
            texts = [cut(parts.token_text(t), PANEL_TOKEN_CHARS) for t in ids]
            examples.append({
                "value": _finite_or_none(v), "request_id": slices.request_name(request[s][i]),
                "row": row[s][i], "position": position[s][i], "index": index,
                # Text when a tokenizer is known, else the ids.
                **({"tokens": texts} if texts and texts[0] is not None else {"token_ids": ids}),
                # bfloat16 values: four significant digits say all they hold.
                "activations": [None if a is None or not math.isfinite(a) else
                                float(f"{a:.4g}") for a in window_acts],
            })
        out.append(examples)
    return out


def fit_snapshot(snapshot: Snapshot, max_bytes: int = SNAPSHOT_BYTES) -> Snapshot:
    """`snapshot` within `max_bytes` on the wire: the panels' logits parts go, the last
    panel's first, while it is over (each part's own budget keeps it bounded; together with
    the rest they can pass the limit when the table, records and labels are at their largest).
    Changes the panels in place; returns `snapshot`."""
    while snapshot.nbytes() > max_bytes and drop_logits(snapshot.feature_panels):
        pass
    return snapshot


def _quantiles(log_counts: list[int], threshold: float,
               maximum: float) -> list[list[float | None]] | None:
    """`bin_quantiles` of one feature as `[[q, value], ...]` (None: never active)."""
    got = bin_quantiles(log_counts[:DIST_LOG_BINS], threshold, maximum)
    return None if got is None else [[q, _finite_or_none(got[q])] for q in QUANTILES]


def _with_cofiring(panels: list[dict[str, Any]], parts: SnapshotParts,
                   columns: list[torch.Tensor]) -> list[dict[str, Any]]:
    """Each panel gains `fires_with`: the tokens counted since its feature was selected, its
    active count among them, and the features it fires with most by Jaccard, as compact rows
    `[feature, jaccard, both, active, label or None]` (labels cut short); rows are dropped
    from the longest lists until all fit `PANEL_COFIRING_BYTES`."""
    counts, jaccard, totals = (c.tolist() for c in columns)
    by_feature = {}
    for s, feature in enumerate(parts.cofiring.features):
        rows = []
        for (f, both, active), j in zip(zip(*counts[s], strict=True), jaccard[s], strict=True):
            if j < 0:
                break  # the rest never fired with it
            rows.append([f, float(f"{j:.4g}"), both, active,
                         cut(parts.labels.get(f), PANEL_COFIRING_LABEL_CHARS)])
        by_feature[feature] = {"tokens": totals[s][0], "active": totals[s][1], "features": rows}
    lists = list(by_feature.values())

    def size() -> int:
        return len(json.dumps(lists, ensure_ascii=False).encode())

    while size() > PANEL_COFIRING_BYTES and any(c["features"] for c in lists):
        max(lists, key=lambda c: len(c["features"]))["features"].pop()
    for panel in panels:
        if panel["feature"] in by_feature:
            panel["fires_with"] = by_feature[panel["feature"]]
    return panels


def _narrow(example: dict[str, Any], radius: int) -> None:
    """Keep `radius` tokens each side of the activating one."""
    index = max(example["index"], 0)
    lo = max(0, index - radius)
    for key in ("token_ids", "tokens", "activations"):
        if key in example:
            example[key] = example[key][lo: index + radius + 1]
    if example["index"] >= 0:
        example["index"] = index - lo


def _label_bytes(labels: list[str | None]) -> int:
    return sum(len(label.encode()) + 4 for label in labels if label is not None)


def _table_top_tokens(parts: SnapshotParts, features: list[int], ids: list[list[int]],
                      label_bytes: int) -> list[list[list[str | int]] | None]:
    """The top tokens of the table's rows without a label, as [text, count] pairs, in row order
    while they fit `TABLE_TOP_TOKEN_BYTES` plus what the labels left of theirs (the rest: None;
    an empty list when no row has any)."""
    out: list[list[list[str | int]] | None] = []
    budget = TABLE_TOP_TOKEN_BYTES + max(0, TABLE_LABEL_BYTES - label_bytes)
    for found in descriptors(features, ids, parts.labels, parts.token_text):
        pairs = None if found is None else [[text, n] for text, n in found]
        size = 0 if pairs is None else len(json.dumps(pairs, ensure_ascii=False).encode())
        out.append(pairs if size <= budget else None)
        budget -= size if size <= budget else 0
    return out if any(pairs is not None for pairs in out) else []


def _table_labels(labels: dict[int, str], features: list[int]) -> list[str | None]:
    """Labels of the table's rows, cut short, in row order while they fit the byte budget (the
    full text stays in get_statistics / get_examples)."""
    out: list[str | None] = []
    budget = TABLE_LABEL_BYTES
    for feature in features:
        label = cut(labels.get(feature), TABLE_LABEL_CHARS)
        size = 0 if label is None else len(label.encode()) + 4
        out.append(label if size <= budget else None)
        budget -= size if size <= budget else 0
    return out
