"""Answers to the read operations, from the running statistics and the history: ranking on the
device, statistics rows and history records on the host."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ...snapshot.records import HistoryRows, known_window
from ...snapshot.top_tokens import descriptors
from ...types import ActivatingExample, ActivationRecord, FeatureStatistics
from ..record.examples import ExampleTable
from ..record.requests import split_row
from ..stats.backend import Backend
from ..stats.running import RunningStats
from .ranking import top_k_of_metric, top_k_stable

Tensor = torch.Tensor

HISTORY_LIMIT_RANGE = (1, 100_000)
# A statistics row's metrics, in the order `statistics_rows` reads them.
ROW_METRICS = ("count", "active_count", "active_ratio", "mean", "mean_active", "std", "min",
               "max")
TOP_FEATURES_K_RANGE = (1, 1000)


def rank(stats: RunningStats, candidates: Tensor | None, metric: str, k: int,
         backend: Backend | None = None) -> Tensor:
    """The top-k of `candidates` (feature indices; None: every feature) by `metric`, on the
    device, in O(d_sae) (`ranking.top_k_stable`; the C scan where `backend` runs it). Ties go
    to the lower index; features where the metric is undefined (NaN) come last."""
    if candidates is None:
        return top_k_of_metric(stats.totals, metric, k, backend)
    index = candidates.sort().values  # ties are broken by position: positions in index order
    values = stats.metrics_at((metric,), index)[0]  # only the candidates' totals: O(candidates)
    return index.index_select(0, top_k_stable(values, k, backend))


def statistics_rows(stats: RunningStats, index: Tensor, labels: dict[int, str],
                    top: list[list[tuple[str, int]] | None] | None = None,
                    ) -> list[FeatureStatistics]:
    """`FeatureStatistics` of the features `index`, in that order (one copy to the host), with
    their `labels` and, where given, their `top` tokens (`top_token_rows`)."""
    cols = stats.metrics_at(ROW_METRICS, index)
    nans = stats.totals.nan_count.index_select(0, index).to(torch.float64)
    count, active, ratio, mean, mean_active, std, mn, mx, nans = torch.cat(
        [cols, nans[None]]).cpu().tolist()
    return [
        FeatureStatistics(
            feature_idx=f, count=int(count[i]), active_count=int(active[i]),
            active_ratio=_defined(ratio[i]), mean=_defined(mean[i]),
            mean_active=_defined(mean_active[i]), std=_defined(std[i]), min=_defined(mn[i]),
            max=_defined(mx[i]), nan_count=int(nans[i]), label=labels.get(f),
            top_tokens=None if top is None else top[i],
        )
        for i, f in enumerate(index.cpu().tolist())
    ]


def top_token_rows(table: ExampleTable, index: Tensor, labels: dict[int, str],
                   token_text: Callable[[int], str | None]
                   ) -> list[list[tuple[str, int]] | None]:
    """Per feature of `index`: its top tokens (`snapshot.top_tokens`) when it has no label."""
    return descriptors(index.cpu().tolist(), table.centre_tokens(index).cpu().tolist(),
                       labels, token_text)


def matching(rows: HistoryRows, request_id: str | None, row: int | None = None) -> list[int]:
    """Indices of the records in `rows` that match, newest first; `request_id` keeps only that
    request, and `row` (or the shorthand `request_id="name/N"`) only that batch row of it."""
    wanted = None if request_id is None else (request_id, row)
    if wanted is not None and row is None and (parts := split_row(request_id)) is not None:
        wanted = parts  # request ids never have that form (`check_new_request_id`)
    if wanted is None:
        return list(range(len(rows) - 1, -1, -1))
    return [i for i in range(len(rows) - 1, -1, -1)
            if rows.request_ids[i] == wanted[0] and wanted[1] in (None, rows.rows[i])]


def records_at(rows: HistoryRows, indices: list[int], monitored: tuple[int, ...],
               threshold: float, token_text: Callable[[int], str | None]
               ) -> list[ActivationRecord]:
    """The records at `indices` of `rows` (built only for those: a limit of 50 out of a
    100,000-record history builds 50)."""
    return [ActivationRecord(
        timestamp=rows.timestamps[i], request_id=rows.request_ids[i], row=rows.rows[i],
        token_position=rows.positions[i],
        activations=dict(zip(monitored, rows.values[i], strict=True)),
        top_k=rows.top_above(i, threshold),
        token_id=rows.token_ids[i] if rows.token_ids[i] >= 0 else None,
        token=token_text(rows.token_ids[i]),
    ) for i in indices]


def history_records(rows: HistoryRows, monitored: tuple[int, ...], threshold: float,
                    request_id: str | None, token_text: Callable[[int], str | None],
                    row: int | None = None) -> list[ActivationRecord]:
    """The records in `rows` that match (see `matching`), newest first."""
    return records_at(rows, matching(rows, request_id, row), monitored, threshold, token_text)


def feature_examples(table: ExampleTable, feature: int, k: int,
                     token_text: Callable[[int], str | None]) -> list[ActivatingExample]:
    """Feature `feature`'s first `k` kept examples (the top ones highest first; a sample in
    key order)."""
    rows = table.read(feature, k)
    out = []
    for i, window in enumerate(rows.windows):
        ids, index, acts = known_window(window, rows.window_acts[i], table.window)
        texts = [token_text(t) for t in ids]
        out.append(ActivatingExample(
            value=rows.values[i], request_id=table.request_name(rows.requests[i]),
            row=rows.rows[i], position=rows.positions[i], token_ids=ids, index=index,
            tokens=texts if ids and texts[0] is not None else None, activations=acts,
        ))
    return out


def _defined(value: float) -> float | None:
    return None if math.isnan(value) else value
