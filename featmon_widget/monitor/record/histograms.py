"""What is left of the selected features' value histograms (the part "values" of saves up to
format 3): they counted the selected features' values from the moment each was selected; the
per-feature distributions of every feature (`distributions`) replaced them. The part stays so
an older save still loads: its counts are checked for shape and range and left out; a newer
save holds the part empty.
"""

from __future__ import annotations

from typing import Any

import torch

from .registry import MAX_COUNT, Spec, StatePart, check_range, check_tensors

Tensor = torch.Tensor

# The old histograms' bins per selected feature: the inactive bin, then four log bins per
# octave from 2^-8 to 2^12.
LEGACY_BIN_COUNT = 1 + 20 * 4


class LegacyValueHistograms(StatePart):
    """The old "values" part: holds nothing, accepts an older save's counts (see module doc)."""

    name = "values"

    def __init__(self, selected: int) -> None:
        self.selected = selected  # rows an older save of this configuration holds

    def state_tensors(self) -> dict[str, Tensor]:
        """Nothing."""
        return {}

    def check_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """No meta; no tensors, or an older save's counts [selected, 81] int64."""
        self.check_meta(meta)
        want = {} if not tensors else {
            "counts": Spec((self.selected, LEGACY_BIN_COUNT), torch.int64)}
        check_tensors(self.name, tensors, want)

    def check_values(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Old counts in 0..`MAX_COUNT`."""
        if tensors:
            check_range(self.name, tensors, "counts", 0, MAX_COUNT)

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Nothing to keep."""

    def memory_bytes(self) -> dict[str, int]:
        """Nothing held."""
        return {}
