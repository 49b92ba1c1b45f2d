"""Fixed-bin histograms of the activation values of a few selected features, on the device.

Bins are fixed so device-side counts can be accumulated without knowing the data range, and so
the frontend can draw them without recomputing edges.
"""

from __future__ import annotations

import torch

from .features import DenseFeatures, SparseFeatures
from .registry import MAX_COUNT, Event, StatePart, check_range, nbytes

Tensor = torch.Tensor

# Activation values: bin 0 holds inactive values (<= threshold); then log-spaced bins with four
# per octave from 2^-8 to 2^12; the first and last log bins also take values beyond that range.
VALUE_OCTAVES = (-8, 12)
VALUE_BINS_PER_OCTAVE = 4
VALUE_EDGES = torch.logspace(
    VALUE_OCTAVES[0], VALUE_OCTAVES[1],
    (VALUE_OCTAVES[1] - VALUE_OCTAVES[0]) * VALUE_BINS_PER_OCTAVE + 1,
    base=2.0, dtype=torch.float64,
)
VALUE_BIN_COUNT = 1 + len(VALUE_EDGES) - 1

class ValueHistograms(StatePart):
    """Device-side value histograms for a few selected features, counted since selection."""

    name = "values"

    def __init__(self, features: tuple[int, ...], device: torch.device):
        self.features = features
        self.device = torch.device(device)
        self.counts = torch.zeros(len(features), VALUE_BIN_COUNT, dtype=torch.int64,
                                  device=self.device)
        self._index = torch.tensor(features, dtype=torch.int64, device=self.device)
        self._edges = VALUE_EDGES.to(self.device)

    def reselected(self, features: tuple[int, ...]) -> ValueHistograms:
        """Histograms for a new selection, keeping the counts of features still selected."""
        new = ValueHistograms(features, self.device)
        for j, f in enumerate(features):
            if f in self.features:
                new.counts[j] = self.counts[self.features.index(f)]
        return new

    # ---- StatePart: saved, zeroed by a statistics reset and a threshold change, local ------

    def state_tensors(self) -> dict[str, Tensor]:
        """The counts [selected, bins] (saving copies them, loading copies into them)."""
        return {"counts": self.counts}

    def check_values(self, tensors: dict[str, Tensor], meta: dict[str, object]) -> None:
        """Counts in 0..`MAX_COUNT`."""
        check_range(self.name, tensors, "counts", 0, MAX_COUNT)

    def reset_on(self, event: Event) -> None:
        """Counted since the last reset and under the threshold in force."""
        if event in (Event.STATISTICS, Event.THRESHOLD):
            self.counts.zero_()

    def memory_bytes(self) -> dict[str, int]:
        """The counts."""
        return {"histograms": nbytes([self.counts])}

    def update(self, features: DenseFeatures | SparseFeatures, valid: Tensor,
               threshold: float) -> None:
        """Count the selected features' finite values in rows where `valid` is true."""
        if not self.features:
            return
        x = features.columns(self._index).to(torch.float64)  # [N, S]
        keep = (torch.isfinite(x) & valid[:, None]).to(torch.int64)
        log_bin = torch.bucketize(x, self._edges[1:-1], right=True) + 1
        bins = torch.where(x > threshold, log_bin, 0)
        flat = bins + torch.arange(len(self.features), device=self.device) * VALUE_BIN_COUNT
        self.counts.view(-1).scatter_add_(0, flat.reshape(-1), keep.reshape(-1))
