"""Exact running per-feature statistics, kept on the activations' device.

Counts are int64 and sums float64. Each batch is reduced in one pass against a per-feature shift
(the running mean so far), so the variance never suffers the cancellation of the naive
`sum_sq - sum**2 / n` formula, and merging a batch into the running totals is Chan's parallel
update written in shifted form. Nothing here reads a value back to the host.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

Tensor = torch.Tensor

# Rows per eager chunk: a chunk's float64 working set stays a few megabytes, so the many
# elementwise passes of the eager path hit cache instead of memory.
_EAGER_CHUNK_BYTES = 1 << 22


class Moments(NamedTuple):
    """One batch reduced per feature, against a per-feature shift; each field is [F]."""

    count: Tensor  # int64: finite values in valid rows
    nan_count: Tensor  # int64: NaN/Inf values in valid rows
    active_count: Tensor  # int64: finite values > threshold
    active_sum: Tensor  # float64: sum of active values
    shifted_sum: Tensor  # float64: sum(x - shift)
    shifted_sq_sum: Tensor  # float64: sum((x - shift)**2)
    min: Tensor  # float64: +inf where count == 0
    max: Tensor  # float64: -inf where count == 0


class Totals(NamedTuple):
    """Running per-feature statistics since the last reset; each field is [F]."""

    count: Tensor  # int64: finite values seen
    nan_count: Tensor  # int64: NaN/Inf values seen
    active_count: Tensor  # int64: values > threshold (since the threshold was set)
    active_sum: Tensor  # float64: sum of active values
    mean: Tensor  # float64: mean of finite values
    m2: Tensor  # float64: sum of squared deviations from the mean
    min: Tensor  # float64: +inf where none seen
    max: Tensor  # float64: -inf where none seen


def empty_totals(features: int, device: torch.device) -> Totals:
    """Zeroed totals (min +inf, max -inf) for `features` features on `device`."""
    def zeros(dtype: torch.dtype) -> Tensor:
        return torch.zeros(features, dtype=dtype, device=device)

    def full(value: float) -> Tensor:
        return torch.full((features,), value, dtype=torch.float64, device=device)

    return Totals(zeros(torch.int64), zeros(torch.int64), zeros(torch.int64),
                  zeros(torch.float64), zeros(torch.float64), zeros(torch.float64),
                  full(float("inf")), full(float("-inf")))


def batch_moments(
    acts: Tensor, valid: Tensor | None, shift: Tensor, threshold: float
) -> Moments:
    """Reduce `acts` [N, F] over rows where `valid` [N] is true (every row if None: the caller
    knows there is no padding, and the kernel skips a select per value); one fused pass when
    compiled.

    Invalid rows become NaN first, so a single finiteness test per element covers both padding
    and NaN/Inf values: `x - x` is 0 exactly for finite x. (A separate row mask and isfinite
    made the compiled CPU kernel three to five times slower.) Comparisons are in float64, so
    `x > threshold` means exactly that for every input dtype.
    """
    # float32 input keeps its masks and min/max in float32 (exact, twice the vector lanes);
    # other dtypes widen first (bf16 to float32 to float64 compiled slower on CPU).
    lanes = acts if acts.dtype == torch.float32 else acts.to(torch.float64)
    xn = lanes if valid is None else torch.where(valid[:, None], lanes, float("nan"))
    ok = (xn - xn) == 0
    x = xn.to(torch.float64)
    d = torch.where(ok, x - shift, 0.0)
    # Non-finite values are never active. (where-then-compare: `ok & (x > t)` compiled to a
    # kernel three times slower on CPU.)
    x_active = torch.where(ok, x, threshold)
    active = x_active > threshold
    count = ok.sum(0)
    return Moments(
        count,
        (acts.shape[0] if valid is None else valid.sum()) - count,  # NaN/Inf in valid rows
        active.sum(0),
        torch.where(active, x_active, 0.0).sum(0),
        d.sum(0),
        (d * d).sum(0),
        torch.where(ok, xn, float("inf")).amin(0).to(torch.float64),
        torch.where(ok, xn, float("-inf")).amax(0).to(torch.float64),
    )


def sparse_moments(
    indices: Tensor, values: Tensor, valid: Tensor, shift: Tensor, threshold: float
) -> Moments:
    """`batch_moments` of the dense matrix that is `values` at `indices` [N, k] and 0 elsewhere,
    in O(N k) scatters instead of O(N d_sae). Indices within a row must be distinct.

    Every valid row holds each feature: its stored value, or an implicit 0. Implicit zeros are
    folded in by count (`zeros * shift**2` etc.) instead of being read. Padding rows, and
    indices outside 0..F-1 (which must never crash a forward; `sparse_update` counts them),
    scatter into a sink bucket past the last feature rather than being masked value by value.
    """
    f = shift.shape[0]
    keep = valid[:, None] & _in_range(indices, f)
    idx = torch.where(keep, indices.to(torch.int64), f).reshape(-1)
    v = values.reshape(-1)
    ok = (v - v) == 0
    x = torch.where(ok, v.to(torch.float64), 0.0)
    d = torch.where(ok, x - torch.cat([shift, shift.new_zeros(1)])[idx], 0.0)
    x_active = torch.where(ok, x, threshold)
    active = x_active > threshold

    def scatter_sum(src: Tensor) -> Tensor:
        out = torch.zeros(f + 1, dtype=src.dtype, device=src.device)
        return out.scatter_add_(0, idx, src)[:f]

    def scatter_extreme(src: Tensor, fill: float, reduce: str) -> Tensor:
        out = torch.full((f + 1,), fill, dtype=src.dtype, device=src.device)
        return out.scatter_reduce_(0, idx, src, reduce)[:f]

    stored = scatter_sum(ok.to(torch.int64))
    nan_count = scatter_sum((~ok).to(torch.int64))
    count = valid.sum() - nan_count
    zeros = count - stored  # valid rows where the feature is an implicit 0
    zeros_f = zeros.to(torch.float64)
    s1 = scatter_sum(d) - zeros_f * shift
    s2 = scatter_sum(d * d) + zeros_f * shift * shift
    zero_active = zeros if threshold < 0.0 else torch.zeros_like(zeros)  # 0 > threshold
    active_count = scatter_sum(active.to(torch.int64)) + zero_active
    active_sum = scatter_sum(torch.where(active, x_active, 0.0))
    mn = scatter_extreme(torch.where(ok, x, float("inf")), float("inf"), "amin")
    mx = scatter_extreme(torch.where(ok, x, float("-inf")), float("-inf"), "amax")
    has_zero = zeros > 0
    mn = torch.where(has_zero, mn.clamp_max(0.0), mn)
    mx = torch.where(has_zero, mx.clamp_min(0.0), mx)
    return Moments(count, nan_count, active_count, active_sum, s1, s2, mn, mx)


def merge_moments(state: Totals, shift: Tensor, moments: Moments) -> Totals:
    """Running totals `state` with one batch's moments (taken against `shift`) folded in;
    Chan's merge in shifted form."""
    n_new = state.count + moments.count
    safe_n = n_new.clamp_min(1).to(torch.float64)
    s1, s2 = moments.shifted_sum, moments.shifted_sq_sum
    # With shift == old mean, the sum over everything of (x - shift)^2 is M2 + s2.
    m2 = torch.where(n_new > 0, state.m2 + s2 - s1 * s1 / safe_n, state.m2).clamp_min(0.0)
    mean = torch.where(n_new > 0, shift + s1 / safe_n, state.mean)
    return Totals(n_new, state.nan_count + moments.nan_count,
                  state.active_count + moments.active_count,
                  state.active_sum + moments.active_sum, mean, m2,
                  torch.minimum(state.min, moments.min), torch.maximum(state.max, moments.max))


def combine_totals(a: Totals, b: Totals) -> Totals:
    """The totals of two disjoint sets of values, each given by its totals (Chan's pairwise
    merge of mean and M2; a side with no values contributes nothing, exactly)."""
    n = a.count + b.count
    na, nb = a.count.to(torch.float64), b.count.to(torch.float64)
    safe_n = n.clamp_min(1).to(torch.float64)
    delta = b.mean - a.mean
    mean = a.mean + delta * (nb / safe_n)
    m2 = a.m2 + b.m2 + delta * delta * (na * nb / safe_n)
    mean = torch.where(b.count == 0, a.mean, torch.where(a.count == 0, b.mean, mean))
    m2 = torch.where(b.count == 0, a.m2, torch.where(a.count == 0, b.m2, m2))
    return Totals(n, a.nan_count + b.nan_count, a.active_count + b.active_count,
                  a.active_sum + b.active_sum, mean, m2, torch.minimum(a.min, b.min),
                  torch.maximum(a.max, b.max))


def merge_moments_(state: Totals, shift: Tensor, moments: Moments) -> None:
    """`merge_moments` written into `state` in place. New totals would be eight fresh [F]
    buffers per update, and on the CPU touching fresh pages cost more than the merge."""
    for total, merged in zip(state, merge_moments(state, shift, moments), strict=True):
        total.copy_(merged)


def _in_range(indices: Tensor, f: int) -> Tensor:
    return (indices >= 0) & (indices < f)


def sparse_update(state: Totals, indices: Tensor, values: Tensor, valid: Tensor,
                  threshold: float) -> tuple[Totals, Tensor]:
    """Running totals `state` with top-k features folded in, and how many indices in valid rows
    were outside 0..F-1 (ignored). Shift, moments and merge are one function, so compiled it is
    one graph with no [F]-sized intermediates between steps."""
    shift = sparse_shift(state.count, state.mean)
    dropped = (valid[:, None] & ~_in_range(indices, shift.shape[0])).sum()
    moments = sparse_moments(indices, values, valid, shift, threshold)
    return merge_moments(state, shift, moments), dropped


def chunked_eager_moments(
    acts: Tensor, valid: Tensor | None, shift: Tensor, threshold: float
) -> Moments:
    """`batch_moments` over cache-sized row chunks, for when compilation is unavailable."""
    rows = max(1, _EAGER_CHUNK_BYTES // (8 * acts.shape[1]))
    total: Moments | None = None
    for start in range(0, acts.shape[0], rows):
        chunk = slice(start, start + rows)
        part = batch_moments(acts[chunk], None if valid is None else valid[chunk], shift,
                             threshold)
        if total is None:
            total = part  # fresh tensors: accumulated into in place below
            continue
        for acc, add in zip(total[:6], part[:6], strict=True):
            acc += add
        torch.minimum(total.min, part.min, out=total.min)
        torch.maximum(total.max, part.max, out=total.max)
    assert total is not None
    return total


def sparse_shift(count: Tensor, mean: Tensor) -> Tensor:
    """The per-feature shift for TopK values: the running mean, or 0 for never-seen features
    (implicit zeros dominate a TopK SAE's output, so 0 is near the data)."""
    return torch.where(count > 0, mean, 0.0)


def shift_for(acts: Tensor, mean: Tensor, count: Tensor, valid: Tensor | None = None) -> Tensor:
    """The per-feature shift for a batch: the running mean, or for never-seen features the
    batch's first row counted (`valid` [N], None: every row): a value of the data keeps the
    shifted sums well conditioned. A padding row's value could be far from it (1.0 against
    data of 1e-12 lost five digits of the mean)."""
    first = first_row(acts, valid)[0].to(torch.float64)
    first = torch.where(torch.isfinite(first), first, 0.0)
    return torch.where(count > 0, mean, first)


def first_row(acts: Tensor, valid: Tensor | None) -> Tensor:
    """[1, F]: the first row of `acts` [N, F] where `valid` [N] is true (the first row where
    none is, or for None), picked on the device: no host read (a 0-dim index would be one)."""
    if valid is None:
        return acts[:1]
    return acts.index_select(0, valid.to(torch.uint8).argmax().reshape(1))
