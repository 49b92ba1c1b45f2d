"""One read of the per-feature firing counts per snapshot, shared by every part that needs
them: the frequency histogram's bins, the never-fired / never-seen counts, and the health
strip's dead, ultra-rare and L0 numbers (layout in `snapshot/frequency.py`).

On the CPU one compiled pass (`stats/scans.py`) where the monitor's `Backend` runs it; elsewhere,
with `native=False`, without a compiler or a backend, the same numbers from torch, computing the
ratio once. Nothing is read back to the host.
"""

from __future__ import annotations

import torch

from ...snapshot.frequency import FREQUENCY_BIN_COUNT, FREQUENCY_THRESHOLDS
from ..stats.backend import Backend

Tensor = torch.Tensor


def firing_summary(active_count: Tensor, count: Tensor, rare_floor: float,
                   backend: Backend | None = None) -> Tensor:
    """int64 [`FIRING_SUMMARY_SIZE`] on the counts' device: the frequency histogram of the fired
    features' active_count / count, never fired, never seen, ultra-rare (fired, ratio below
    `rare_floor`) and the sum of `active_count`. The compiled scan where `backend` runs it."""
    scans = None if backend is None else backend.firing_summary(active_count, count)
    if scans is not None:
        return scans.firing_summary(active_count, count, FREQUENCY_THRESHOLDS, rare_floor)
    return firing_summary_torch(active_count, count, rare_floor)


def firing_summary_torch(active_count: Tensor, count: Tensor, rare_floor: float) -> Tensor:
    """`firing_summary` from torch operations (any device)."""
    seen = count > 0
    fired = seen & (active_count > 0)
    ratio = active_count.to(torch.float64) / count.clamp_min(1).to(torch.float64)
    bins = torch.bucketize(ratio, FREQUENCY_THRESHOLDS.to(count.device), right=True)
    hist = torch.zeros(FREQUENCY_BIN_COUNT, dtype=torch.int64, device=count.device)
    hist.scatter_add_(0, bins, fired.to(torch.int64))
    return torch.cat([hist, torch.stack([(seen & ~fired).sum(), (~seen).sum(),
                                         (fired & (ratio < rare_floor)).sum(),
                                         active_count.sum()])])
