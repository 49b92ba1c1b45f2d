"""The compiled whole-feature reads (`csrc/feature_scans.c`): the firing summary a snapshot
shares between its frequency histogram and its health strip, and the stable top-k a ranking
needs (of any array, or of a metric computed from the totals as the scan goes). The monitor's
`Backend` decides which calls come here; callers use the torch path where it says no (GPU, no
compiler, `native=False`)."""

from __future__ import annotations

import torch

from .moments import Totals
from .native import check_buffers
from .protocol import METRIC_CODES, SCAN_BINS, CFunction, CFunctions

Tensor = torch.Tensor


class FeatureScans:
    """Calls the compiled scans on CPU tensors, checking every buffer first."""

    C_FUNCTIONS = (
        CFunction("void", "featmon_firing_summary", (
            "const int64_t *active", "const int64_t *count", "int64_t n",
            "const double *thresholds", "double rare_floor", "int64_t *out")),
        CFunction("int", "featmon_top_k", (
            "const double *values", "int64_t n", "int64_t k", "int64_t *out")),
        CFunction("int", "featmon_top_k_metric", (
            "int metric", "const int64_t *count", "const int64_t *active",
            "const double *active_sum", "const double *mean", "const double *m2",
            "const double *min", "const double *max", "int64_t n", "int64_t k",
            "int64_t *out")),
    )

    def __init__(self, c: CFunctions) -> None:
        self.c = c

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
        self.c.featmon_firing_summary(active_count.data_ptr(), count.data_ptr(), n,
                                      thresholds.data_ptr(), float(rare_floor), out.data_ptr())
        return out

    def top_k(self, values: Tensor, k: int) -> Tensor:
        """Positions of the `k` largest of float64 `values` [n], largest first, ties to the
        lower position, NaN as -inf (1 <= k <= n)."""
        n = values.shape[0]
        check_buffers(values.dtype == torch.float64 and values.dim() == 1 and 1 <= k <= n,
                      values)
        out = torch.empty(k, dtype=torch.int64)
        _raise_for(self.c.featmon_top_k(values.data_ptr(), n, k, out.data_ptr()), k)
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
        _raise_for(self.c.featmon_top_k_metric(
            METRIC_CODES[metric], t.count.data_ptr(), t.active_count.data_ptr(),
            t.active_sum.data_ptr(), t.mean.data_ptr(), t.m2.data_ptr(), t.min.data_ptr(),
            t.max.data_ptr(), n, k, out.data_ptr()), k)
        return out


def _raise_for(status: int, k: int) -> None:
    if status == -1:
        raise MemoryError(f"native top-k could not allocate its heap of {k}")
    if status != 0:
        raise ValueError(f"native top-k refused its arguments (status {status})")
