"""What a snapshot reads from the monitor: a small protocol, so that building a snapshot needs
nothing but these calls (the monitor's `Recording` implements it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch

from .records import HistoryTail

Tensor = torch.Tensor


class DeviceTotals(NamedTuple):
    """Totals that live on the device (int64 scalars), read back with the rest of a snapshot."""

    tokens: Tensor
    history_count: Tensor
    dropped_indices: Tensor
    records_dropped: Tensor  # history records overwritten by newer ones


class ValueHistogramCounts(NamedTuple):
    """Value histograms of the selected features, from every feature's distribution since the
    last reset: bin counts [features, 1 + log bins] on the device, the inactive count first."""

    features: tuple[int, ...]
    counts: Tensor  # int64 on the device


class ExampleSlices(NamedTuple):
    """The kept examples of a few features, on the device, best first: value [S, E], request,
    row, position [S, E], token ids and activations [S, E, 2 window + 1]."""

    features: tuple[int, ...]
    columns: list[Tensor]
    window: int
    request_name: Callable[[int], str]


class CoFiringTop(NamedTuple):
    """What each selected feature fires with most, on the device: `counts` int64 [S, 3, K]
    (feature, both, its active count; ranked by Jaccard), `jaccard` float64 [S, K] (-1: no
    row), `totals` int64 [S, 2] (tokens counted, the selected feature's active count)."""

    features: tuple[int, ...]
    counts: Tensor
    jaccard: Tensor
    totals: Tensor


class SnapshotSource(Protocol):
    """Read by `build.gather_snapshot` while the caller holds the monitor's lock. Every call
    only enqueues device work: nothing is read back to the host."""

    def device_totals(self) -> DeviceTotals:
        """Tokens recorded, records held, sparse indices dropped."""
        ...

    def ranked(self, metric: str, k: int, among: list[int] | None = None) -> Tensor:
        """Indices of the top-k monitored features (of `among`, if given) by `metric`, ties to
        the lower index."""
        ...

    def metrics_at(self, names: tuple[str, ...], index: Tensor) -> Tensor:
        """The metrics `names` of the features `index` only, float64 [len(names), E]."""
        ...

    def metric(self, name: str) -> Tensor:
        """One per-feature metric, float64 [d_sae], NaN where undefined."""
        ...

    def firing_summary(self) -> Tensor:
        """The firing summary, int64 [FIRING_SUMMARY_SIZE] (layout in `frequency.py`): the
        frequency histogram's bins and the counts over all features."""
        ...

    def value_histograms(self) -> ValueHistogramCounts:
        """The selected features' value histograms."""
        ...

    def cofiring_top(self, k: int) -> CoFiringTop:
        """The `k` features each selected one fires with most (by Jaccard)."""
        ...

    def history_tail(self, records: int) -> HistoryTail:
        """The newest `records` history slots."""
        ...

    def example_tokens(self, index: Tensor) -> Tensor:
        """The token id of each kept example of the features `index`, best first, -1 for none
        or unknown, int32 [len(index), examples]."""
        ...

    def examples_of(self, features: tuple[int, ...], k: int) -> ExampleSlices:
        """The best `k` kept examples of `features`."""
        ...

    def samples_of(self, features: tuple[int, ...], k: int) -> ExampleSlices:
        """The first `k` sampled activating tokens of `features` (a uniform sample)."""
        ...
