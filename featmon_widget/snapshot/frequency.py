"""The firing-frequency histogram across features (log10 active ratio), built for a snapshot
from the running counts, on the device."""

from __future__ import annotations

import torch

Tensor = torch.Tensor

# Firing frequency (active_ratio) across features, as log10: bins of 0.25 decade from 1e-8 to 1.
# Never-fired features are counted apart; ratios below 1e-8 land in the first bin.
FREQUENCY_LOG10_RANGE = (-8.0, 0.0)
FREQUENCY_BIN_COUNT = 32
FREQUENCY_EDGES = torch.linspace(*FREQUENCY_LOG10_RANGE, FREQUENCY_BIN_COUNT + 1,
                                 dtype=torch.float64)


def frequency_histogram(active_count: Tensor, count: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """log10(active_ratio) histogram over features seen at least once.

    Returns (bin counts [FREQUENCY_BIN_COUNT] int64, never-fired count, never-seen count), all
    still on the device.
    """
    seen = count > 0
    fired = seen & (active_count > 0)
    ratio = active_count.to(torch.float64) / count.clamp_min(1).to(torch.float64)
    log_ratio = torch.log10(torch.where(fired, ratio, 1.0))
    edges = FREQUENCY_EDGES.to(count.device)
    bins = (torch.bucketize(log_ratio, edges[1:-1], right=True)).clamp_max(FREQUENCY_BIN_COUNT - 1)
    hist = torch.zeros(FREQUENCY_BIN_COUNT, dtype=torch.int64, device=count.device)
    hist.scatter_add_(0, bins, fired.to(torch.int64))
    never_fired = (seen & ~fired).sum()
    never_seen = (~seen).sum()
    return hist, never_fired, never_seen
