"""`get_distribution`: one feature's value distribution since the last reset, with the
quantiles of its active values read from the bins (see `snapshot/value_bins.py`)."""

from __future__ import annotations

import torch

from ...snapshot.value_bins import DIST_LOG_BINS, NOMINAL_EDGES, bin_quantiles
from ...types import DistributionResponse
from ..record.recording import Recording


def distribution_of(recording: Recording, feature: int) -> DistributionResponse:
    """`feature`'s distribution (checked index; the caller holds the monitor's lock). Raises
    ValueError when the distributions are off."""
    part = recording.distributions
    if not part.enabled:
        raise ValueError("the distributions are off (configure(distributions=True) records "
                         "them from then on)")
    counts = part.row(feature).tolist()
    index = torch.tensor([feature], dtype=torch.int64, device=recording.device)
    maximum = float(recording.metrics_at(("max",), index)[0, 0])
    log = counts[:DIST_LOG_BINS]
    return DistributionResponse(
        feature=feature, edges=tuple(NOMINAL_EDGES.tolist()), counts=tuple(log),
        inactive=counts[DIST_LOG_BINS],
        quantiles=bin_quantiles(log, recording.config.threshold, maximum),
        since=recording.active_since)
