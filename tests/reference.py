"""Float64 numpy reference statistics, the ground truth the monitor is checked against."""

from __future__ import annotations

import numpy as np


def reference_stats(values: np.ndarray, threshold: float = 0.0) -> dict[str, np.ndarray]:
    """Per-column statistics of `values` [N, F] (float64; NaN/Inf counted apart)."""
    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x)
    count = finite.sum(0)
    clean = np.where(finite, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = clean.sum(0) / count
        dev = np.where(finite, x - mean, 0.0)
        var = (dev * dev).sum(0) / (count - 1)
        active = finite & (x > threshold)
        active_count = active.sum(0)
        mean_active = np.where(active, x, 0.0).sum(0) / active_count
    return {
        "count": count,
        "nan_count": (~finite).sum(0),
        "active_count": active_count,
        "mean": np.where(count > 0, mean, np.nan),
        "std": np.where(count > 1, np.sqrt(var), np.where(count == 1, 0.0, np.nan)),
        "min": np.where(count > 0, np.where(finite, x, np.inf).min(0, initial=np.inf), np.nan),
        "max": np.where(count > 0, np.where(finite, x, -np.inf).max(0, initial=-np.inf), np.nan),
        "mean_active": np.where(active_count > 0, mean_active, np.nan),
    }
