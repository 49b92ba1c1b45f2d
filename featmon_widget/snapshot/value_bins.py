"""The bins of every feature's value distribution (`monitor/record/distributions.py`) and the
quantiles read from them; the snapshot's value histograms and `get_distribution` share them.

Per feature: 31 log bins of the active values (x above the threshold), then the inactive count.
The inner edges `EDGES` are 2^e and 1.5 * 2^e for e in -8..6 (0.0039 .. 96), exact in float32:
an active value x (as float32) lands in bin `searchsorted(EDGES, x, side="right")`, so bin 0
takes every active value below 2^-8 (every active value <= 0 too, under a negative threshold)
and bin 30 every value from 96 up. On the float32 bits that is
`clamp((bits >> 22) - DIST_BIN_BIAS, 0, 30)`: bits >> 22 is twice the biased exponent plus the
top mantissa bit. `NOMINAL_EDGES` adds 2^-9 and 2^7 as outer edges for drawing.

Quantiles (`bin_quantiles`): the q-quantile of the active values is read as the value at rank
r = floor(q (n - 1)) of the n sorted active values (numpy's method "lower"), interpolated
linearly within its bin: the estimate lies in the same bin as that value, so it is within the
bin's ratio of it (at most 1.5: 2^e to 1.5 * 2^e; 4/3 above), within 2^-8 of it in bin 0, and
between 96 and the feature's maximum in the last bin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

DIST_BINS = 32  # per feature: the log bins, then the inactive count
DIST_LOG_BINS = DIST_BINS - 1
DIST_LOW_EXPONENT = -8
DIST_BIN_BIAS = 2 * (127 + DIST_LOW_EXPONENT) - 1  # 2^DIST_LOW_EXPONENT starts bin 1
EDGES = torch.tensor([m * 2.0**e for e in range(DIST_LOW_EXPONENT, DIST_LOW_EXPONENT + 15)
                      for m in (1.0, 1.5)], dtype=torch.float64)
NOMINAL_EDGES = torch.cat([EDGES.new_tensor([2.0 ** (DIST_LOW_EXPONENT - 1)]), EDGES,
                           EDGES.new_tensor([2.0 ** (DIST_LOW_EXPONENT + 15)])])
QUANTILES = (0.5, 0.9, 0.99)

assert len(EDGES) == DIST_LOG_BINS - 1


def bin_quantiles(counts: Sequence[int], threshold: float, maximum: float,
                  qs: Sequence[float] = QUANTILES) -> dict[float, float] | None:
    """The quantiles `qs` of the active values from their log-bin `counts` [31] (see module
    doc); `threshold` and `maximum` (the largest value seen) bound the open first and last
    bins. None when no value was active."""
    n = sum(counts)
    if n == 0:
        return None
    edges = NOMINAL_EDGES.tolist()
    top = maximum if math.isfinite(maximum) else edges[-1]
    out: dict[float, float] = {}
    for q in qs:
        rank = math.floor(q * (n - 1))
        below, b = 0, 0
        while rank >= below + counts[b]:
            below += counts[b]
            b += 1
        c = counts[b]
        lo = threshold if b == 0 else edges[b]
        hi = top if b == DIST_LOG_BINS - 1 else edges[b + 1]
        lo, hi = max(lo, threshold), max(min(hi, top), max(lo, threshold))
        out[q] = lo + (hi - lo) * min(1.0, (rank - below + 0.5) / c)
    return out
