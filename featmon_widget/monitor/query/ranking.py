"""The top-k of a per-feature metric in O(d_sae), with the exact order a full stable sort gives:
highest first, ties to the lower index, undefined (NaN) values last.

On the CPU one compiled pass keeps a heap of the k best (`stats/scans.py`: ~1 ms at a million
features, where `topk` and the tie checks took ~7); ranking a metric of the totals computes the
metric inside that pass; the monitor's `Backend` decides where it runs (callers pass it; without
one, torch). Elsewhere, with `native=False`, and without a compiler, torch:
a full sort of a million float64 values took ~38 ms on a 2-core CPU; two `topk` passes and a
sort of 2k candidates take a few. `topk` alone breaks ties arbitrarily, so the candidates are
everything above the k-th value (found by the first `topk`; fewer than k) and the k
lowest-indexed features equal to it (found by a second `topk` over negated indices): the answer
is among them, and a stable sort of those few decides it. On a GPU nothing is read back to the
host; on the CPU, where a read costs nothing, the second `topk` is skipped when the first one
already holds every tie.
"""

from __future__ import annotations

import torch

from ..stats.backend import Backend
from ..stats.moments import Totals
from ..stats.running import metric_of

Tensor = torch.Tensor


def top_k_of_metric(totals: Totals, metric: str, k: int, backend: Backend | None = None
                    ) -> Tensor:
    """`top_k_stable(metric_of(totals, metric), k)`; where `backend` runs the scan (the CPU),
    one pass that computes the metric block by block as it goes (no [d_sae] array of it: at 4M
    features, making that array cost more than the whole scan). No backend: torch."""
    scans = None if backend is None else backend.top_k_metric(totals, metric, k)
    if scans is not None:
        return scans.top_k_metric(totals, metric, k)
    return top_k_stable(metric_of(totals, metric), k, backend)


def top_k_stable(values: Tensor, k: int, backend: Backend | None = None) -> Tensor:
    """Positions of the `k` largest of `values` [n] (float), in order; ties to the lower
    position, NaN as the smallest value of all. The compiled scan where `backend` runs it,
    else (and without a backend) `top_k_stable_torch`."""
    scans = None if backend is None else backend.top_k(values, k)
    if scans is not None:
        return scans.top_k(values, k)
    return top_k_stable_torch(values, k)


def top_k_stable_torch(values: Tensor, k: int) -> Tensor:
    """`top_k_stable` from torch operations (any device; nothing read back on a GPU)."""
    n = values.shape[0]
    k = min(k, n)
    if k == 0:
        return torch.zeros(0, dtype=torch.int64, device=values.device)
    key = torch.where(torch.isnan(values), float("-inf"), values.to(torch.float64))
    if n <= 4 * k:  # small: the plain stable sort is as cheap
        return torch.sort(key, descending=True, stable=True).indices[:k]
    top = key.topk(k)
    kth, above = top.values[-1], top.indices  # `above` holds every value > kth, and some ties
    if values.device.type == "cpu" and int((key == kth).sum()) == int((top.values == kth).sum()):
        # Every tie is among them (the usual case; reading the count is free on the CPU):
        # order them by position, then stably by value.
        above = torch.sort(above).values
        return above.index_select(0, torch.sort(key.index_select(0, above), descending=True,
                                                stable=True).indices)
    position = torch.arange(n, dtype=torch.float64, device=values.device)  # exact below 2**53
    tie_score = torch.where(key == kth, -position, float("-inf"))
    ties = tie_score.topk(k).indices  # the k lowest-positioned ties (or fewer real ones)
    candidates = torch.cat([above, ties])
    cand_key = key.index_select(0, candidates)
    real = (cand_key > kth) | (tie_score.index_select(0, candidates) > float("-inf"))
    # Order by position, drop repeats (a tie found by both passes), then by key, stably.
    by_position = torch.sort(candidates, stable=True)
    candidates, real = by_position.values, real.index_select(0, by_position.indices)
    repeat = torch.cat([candidates.new_zeros(1, dtype=torch.bool),
                        candidates[1:] == candidates[:-1]])
    keep = real & ~repeat
    rank_key = torch.where(keep, key.index_select(0, candidates), float("-inf"))
    order = torch.sort(rank_key, descending=True, stable=True).indices
    # Dropped candidates sort at -inf after the kept ones with equal key only if their position
    # is higher; make them strictly last.
    order = order[torch.sort((~keep).index_select(0, order).to(torch.int8), stable=True).indices]
    return candidates.index_select(0, order[:k])
