"""The compiled whole-feature reads (`csrc/feature_scans.c`): the firing summary a snapshot
shares between its frequency histogram and its health strip, and the stable top-k a ranking
needs (of any array, or of a metric computed from the totals as the scan goes). Callers use the
torch path where this returns None (no compiler, FEATMON_NATIVE=0)."""

from __future__ import annotations

import ctypes

import torch

from ...types import METRICS
from .library import SCANS_SOURCE
from .moments import Totals
from .native import check_buffers, load_kernel

Tensor = torch.Tensor

# Bins of the firing-frequency histogram the kernel fills (its BINS).
SCAN_BINS = 32
# The kernel's metric numbers (its enum, in this order).
METRIC_CODES = {name: code for code, name in enumerate(METRICS)}


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
        self._top_k_metric = library.featmon_top_k_metric
        self._top_k_metric.argtypes = [ctypes.c_int, p, p, p, p, p, p, p, i64, i64, p]
        self._top_k_metric.restype = ctypes.c_int

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
        _raise_for(self._top_k(values.data_ptr(), n, k, out.data_ptr()), k)
        return out

    def top_k_metric(self, totals: Totals, metric: str, k: int) -> Tensor:
        """`top_k` of `metric` (a name in METRIC_CODES) of every feature in `totals`, computed
        as `running.metric_of` does while the scan goes, without a [n] array of it."""
        n = totals.count.shape[0]
        check_buffers(metric in METRIC_CODES and 1 <= k <= n
                      and all(t.shape == (n,) for t in totals)
                      and totals.count.dtype == totals.active_count.dtype == torch.int64
                      and all(t.dtype == torch.float64 for t in (
                          totals.active_sum, totals.mean, totals.m2, totals.min, totals.max)),
                      *totals)
        out = torch.empty(k, dtype=torch.int64)
        t = totals
        _raise_for(self._top_k_metric(METRIC_CODES[metric], t.count.data_ptr(),
                                      t.active_count.data_ptr(), t.active_sum.data_ptr(),
                                      t.mean.data_ptr(), t.m2.data_ptr(), t.min.data_ptr(),
                                      t.max.data_ptr(), n, k, out.data_ptr()), k)
        return out


def _raise_for(status: int, k: int) -> None:
    if status == -1:
        raise MemoryError(f"native top-k could not allocate its heap of {k}")
    if status != 0:
        raise ValueError(f"native top-k refused its arguments (status {status})")


def feature_scans() -> FeatureScans | None:
    """The compiled scans, or None where they cannot be built (warned about once)."""
    return load_kernel(SCANS_SOURCE, FeatureScans, "native feature scans")
