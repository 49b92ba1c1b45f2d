"""The compiled whole-feature reads (`csrc/feature_scans.c`): the firing summary a snapshot
shares between its frequency histogram and its health strip, and the stable top-k a ranking
needs. Callers use the torch path where this returns None (no compiler, FEATMON_NATIVE=0)."""

from __future__ import annotations

import ctypes

import torch

from .library import SCANS_SOURCE
from .native import check_buffers, load_kernel

Tensor = torch.Tensor

# Bins of the firing-frequency histogram the kernel fills (its BINS).
SCAN_BINS = 32


class FeatureScans:
    """Calls the compiled scans on CPU tensors, checking every buffer first."""

    def __init__(self, library: ctypes.CDLL) -> None:
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        self._summary = library.featmon_firing_summary
        self._summary.argtypes = [p, p, i64, p, ctypes.c_double, p]
        self._summary.restype = None
        self._top_k = library.featmon_top_k
        self._top_k.argtypes = [p, i64, i64, p]
        self._top_k.restype = ctypes.c_int

    def firing_summary(self, active_count: Tensor, count: Tensor, thresholds: Tensor,
                       rare_floor: float) -> Tensor:
        """int64 [SCAN_BINS + 4]: how many fired features have active/count in each bin (the
        number of `thresholds` [SCAN_BINS - 1] at or below it), then never fired, never seen,
        ultra-rare (fired, ratio below `rare_floor`) and the sum of `active_count`."""
        n = count.shape[0]
        check_buffers(active_count.dtype == count.dtype == torch.int64
                      and active_count.shape == count.shape == (n,)
                      and thresholds.dtype == torch.float64
                      and thresholds.shape == (SCAN_BINS - 1,), active_count, count, thresholds)
        out = torch.empty(SCAN_BINS + 4, dtype=torch.int64)
        self._summary(active_count.data_ptr(), count.data_ptr(), n, thresholds.data_ptr(),
                      float(rare_floor), out.data_ptr())
        return out

    def top_k(self, values: Tensor, k: int) -> Tensor:
        """Positions of the `k` largest of float64 `values` [n], largest first, ties to the
        lower position, NaN as -inf (1 <= k <= n)."""
        n = values.shape[0]
        check_buffers(values.dtype == torch.float64 and values.dim() == 1 and 1 <= k <= n,
                      values)
        out = torch.empty(k, dtype=torch.int64)
        if self._top_k(values.data_ptr(), n, k, out.data_ptr()) != 0:
            raise MemoryError(f"native top-k could not allocate its heap of {k}")
        return out


def feature_scans() -> FeatureScans | None:
    """The compiled scans, or None where they cannot be built (warned about once)."""
    return load_kernel(SCANS_SOURCE, FeatureScans, "native feature scans")
