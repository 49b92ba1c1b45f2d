"""The eager moment kernels (`stats.moments`): one batch reduced against a shift, Chan's merge
into running totals, the pairwise merge of two totals, and the TopK (sparse) reduction, each
checked against a float64 numpy computation of the same values."""

import numpy as np
import pytest
import torch
from reference import reference_stats

from featmon_widget.monitor.stats import moments
from featmon_widget.monitor.stats.moments import (
    Totals,
    batch_moments,
    chunked_eager_moments,
    combine_totals,
    empty_totals,
    merge_moments,
    merge_moments_,
    shift_for,
    sparse_moments,
    sparse_shift,
    sparse_update,
)

CPU = torch.device("cpu")


def fold(batches: list[torch.Tensor], valid: list[torch.Tensor | None] | None = None,
         threshold: float = 0.0) -> Totals:
    """Running totals of `batches` [N_i, F], each reduced against `shift_for` and merged."""
    totals = empty_totals(batches[0].shape[1], CPU)
    for i, x in enumerate(batches):
        shift = shift_for(x, totals.mean, totals.count)
        rows = None if valid is None else valid[i]
        totals = merge_moments(totals, shift, batch_moments(x, rows, shift, threshold))
    return totals


def assert_totals_match(totals: Totals, values: np.ndarray, threshold: float = 0.0,
                        rel: float = 1e-12) -> None:
    """`totals` against numpy float64 on `values` [N, F] (NaN/Inf counted apart)."""
    ref = reference_stats(values, threshold)
    np.testing.assert_array_equal(totals.count.numpy(), ref["count"])
    np.testing.assert_array_equal(totals.nan_count.numpy(), ref["nan_count"])
    np.testing.assert_array_equal(totals.active_count.numpy(), ref["active_count"])
    seen = ref["count"] > 0
    np.testing.assert_array_equal(totals.min.numpy()[seen], ref["min"][seen])  # exact
    np.testing.assert_array_equal(totals.max.numpy()[seen], ref["max"][seen])
    np.testing.assert_allclose(totals.mean.numpy()[seen], ref["mean"][seen], rtol=rel)
    many = ref["count"] > 1
    var = totals.m2.numpy()[many] / (ref["count"][many] - 1)
    np.testing.assert_allclose(np.sqrt(var), ref["std"][many], rtol=rel * 100)
    x = np.asarray(values, dtype=np.float64)
    active = np.isfinite(x) & (x > threshold)
    np.testing.assert_allclose(totals.active_sum.numpy(), np.where(active, x, 0.0).sum(0),
                               rtol=rel)


# ---- dense batches and Chan's merge ------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_chans_merge_over_uneven_batches_equals_float64(dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(1000, 7, generator=g) * 3 + torch.arange(7) * 5 - 10).to(dtype)
    cuts = [0, 1, 2, 50, 51, 400, 1000]  # one-row batches included
    totals = fold([x[a:b] for a, b in zip(cuts, cuts[1:], strict=False)], threshold=0.5)
    assert_totals_match(totals, x.double().numpy(), threshold=0.5)


def test_the_shift_keeps_a_large_offset_from_cancelling():
    """Values 1e9 + k: the naive sum of squares minus the squared sum loses the variance in
    float64; against the running mean as shift it is exact."""
    base = 1e9
    batches = [torch.tensor([[base + k] for k in range(i, i + 4)], dtype=torch.float64)
               for i in (0, 4, 8)]
    totals = fold(batches)
    values = np.arange(12.0)
    assert totals.mean.item() == base + values.mean()
    assert totals.m2.item() == ((values - values.mean()) ** 2).sum()  # 143.0 exactly
    everything = base + values
    naive = (everything ** 2).sum() - everything.sum() ** 2 / 12
    assert abs(naive - 143.0) > 10.0  # what the shift avoids


def test_a_batch_is_reduced_against_the_shift_it_is_given():
    x = torch.tensor([[1.0, 10.0], [3.0, 14.0], [5.0, 12.0]])
    shift = torch.tensor([2.0, 12.0], dtype=torch.float64)
    got = batch_moments(x, None, shift, threshold=2.0)
    assert got.count.tolist() == [3, 3]
    assert got.shifted_sum.tolist() == [3.0, 0.0]
    assert got.shifted_sq_sum.tolist() == [11.0, 8.0]
    assert got.active_count.tolist() == [2, 3] and got.active_sum.tolist() == [8.0, 36.0]
    assert got.min.tolist() == [1.0, 10.0] and got.max.tolist() == [5.0, 14.0]


def test_shift_for_uses_the_running_mean_or_the_batchs_first_finite_row():
    x = torch.tensor([[float("nan"), 2.0, float("inf"), 7.0], [1.0, 1.0, 1.0, 1.0]])
    mean = torch.tensor([0.0, 0.0, 0.0, 3.5], dtype=torch.float64)
    count = torch.tensor([0, 0, 0, 4])
    assert shift_for(x, mean, count).tolist() == [0.0, 2.0, 0.0, 3.5]


def test_sparse_shift_is_zero_for_never_seen_features():
    mean = torch.tensor([4.0, 2.5], dtype=torch.float64)
    assert sparse_shift(torch.tensor([0, 3]), mean).tolist() == [0.0, 2.5]


def test_nan_and_inf_are_counted_apart_and_never_enter_a_statistic():
    x = torch.tensor([[1.0, float("nan")], [float("inf"), 2.0], [-float("inf"), 4.0],
                      [3.0, 6.0]])
    totals = fold([x[:2], x[2:]])
    assert totals.nan_count.tolist() == [2, 1]
    assert totals.count.tolist() == [2, 3]
    assert totals.mean.tolist() == [2.0, 4.0]
    assert totals.m2.tolist() == [2.0, 8.0]
    assert totals.min.tolist() == [1.0, 2.0] and totals.max.tolist() == [3.0, 6.0]
    assert totals.active_count.tolist() == [2, 3]  # a NaN or an Inf is never active
    assert totals.active_sum.tolist() == [4.0, 12.0]


def test_invalid_rows_count_for_nothing_not_even_their_nans():
    x = torch.tensor([[1.0, 2.0], [float("nan"), 100.0], [3.0, 4.0]])
    valid = torch.tensor([True, False, True])
    totals = fold([x], [valid])
    assert totals.count.tolist() == [2, 2] and totals.nan_count.tolist() == [0, 0]
    assert totals.mean.tolist() == [2.0, 3.0] and totals.max.tolist() == [3.0, 4.0]


def test_a_batch_with_no_valid_row_changes_nothing():
    first = torch.tensor([[1.0, -2.0], [3.0, 5.0]])
    before = fold([first])
    x = torch.tensor([[float("nan"), 9.0]])
    shift = shift_for(x, before.mean, before.count)
    nothing = batch_moments(x, torch.tensor([False]), shift, 0.0)
    assert nothing.count.tolist() == [0, 0] and nothing.nan_count.tolist() == [0, 0]
    assert nothing.min.tolist() == [float("inf")] * 2
    assert nothing.max.tolist() == [float("-inf")] * 2
    after = merge_moments(before, shift, nothing)
    for a, b in zip(after, before, strict=True):
        assert torch.equal(a, b)


def test_a_feature_never_seen_keeps_empty_totals():
    totals = fold([torch.tensor([[float("nan")], [float("nan")]])])
    empty = empty_totals(1, CPU)
    assert totals.count.item() == 0 and totals.nan_count.item() == 2
    assert totals.mean.item() == 0.0 and totals.m2.item() == 0.0
    assert totals.min.item() == empty.min.item() == float("inf")
    assert totals.max.item() == empty.max.item() == float("-inf")


def test_the_threshold_is_compared_in_float64_for_every_dtype():
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = torch.tensor([[0.1]], dtype=dtype)
        stored = float(x.item())  # the value as stored, not 0.1
        shift = torch.zeros(1, dtype=torch.float64)
        assert batch_moments(x, None, shift, stored).active_count.item() == 0
        just_below = np.nextafter(stored, -np.inf)
        assert batch_moments(x, None, shift, just_below).active_count.item() == 1


def test_merge_in_place_equals_the_merge():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 5, generator=g)
    state = fold([x[:10]])
    shift = shift_for(x[10:], state.mean, state.count)
    part = batch_moments(x[10:], None, shift, 0.0)
    want = merge_moments(state, shift, part)
    merge_moments_(state, shift, part)
    for a, b in zip(state, want, strict=True):
        assert torch.equal(a, b)


def test_chunked_eager_moments_equal_one_pass(monkeypatch):
    monkeypatch.setattr(moments, "_EAGER_CHUNK_BYTES", 8 * 6 * 7)  # 7 rows of 6 features
    g = torch.Generator().manual_seed(2)
    x = torch.randn(50, 6, generator=g)
    x[3, 1] = float("nan")
    valid = torch.rand(50, generator=g) > 0.2
    shift = x[0].double()
    one = batch_moments(x, valid, shift, 0.1)
    chunked = chunked_eager_moments(x, valid, shift, 0.1)
    for field in ("count", "nan_count", "active_count", "min", "max"):
        assert torch.equal(getattr(chunked, field), getattr(one, field)), field
    for field in ("active_sum", "shifted_sum", "shifted_sq_sum"):
        torch.testing.assert_close(getattr(chunked, field), getattr(one, field),
                                   rtol=1e-13, atol=1e-13)


# ---- combining two totals ------------------------------------------------------------------------


def test_combining_totals_equals_the_totals_of_all_the_values():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(40, 4, generator=g) + 100
    b = torch.randn(25, 4, generator=g) * 4 - 3
    both = combine_totals(fold([a[:10], a[10:]]), fold([b]))
    assert_totals_match(both, torch.cat([a, b]).double().numpy())


def test_a_side_with_no_values_contributes_exactly_nothing():
    g = torch.Generator().manual_seed(4)
    some = fold([torch.randn(9, 3, generator=g)])
    empty = empty_totals(3, CPU)
    for combined in (combine_totals(some, empty), combine_totals(empty, some)):
        for got, want in zip(combined, some, strict=True):
            assert torch.equal(got, want)


# ---- sparse (TopK) batches ---------------------------------------------------------------------


def _dense(indices: torch.Tensor, values: torch.Tensor, f: int) -> torch.Tensor:
    return torch.zeros(indices.shape[0], f).scatter_(1, indices, values)


@pytest.mark.parametrize("threshold", [0.0, 0.3, -0.5])
def test_sparse_moments_equal_those_of_the_dense_matrix(threshold):
    g = torch.Generator().manual_seed(5)
    f, n, k = 12, 40, 3
    indices = torch.stack([torch.randperm(f, generator=g)[:k] for _ in range(n)])
    values = torch.randn(n, k, generator=g)
    values[7, 1] = float("nan")
    valid = torch.rand(n, generator=g) > 0.25
    shift = torch.randn(f, generator=g).double()
    sparse = sparse_moments(indices, values, valid, shift, threshold)
    dense = batch_moments(_dense(indices, values, f), valid, shift, threshold)
    for field in ("count", "nan_count", "active_count", "min", "max"):
        assert torch.equal(getattr(sparse, field), getattr(dense, field)), field
    for field in ("active_sum", "shifted_sum", "shifted_sq_sum"):
        torch.testing.assert_close(getattr(sparse, field), getattr(dense, field),
                                   rtol=1e-12, atol=1e-12)


def test_sparse_update_drops_out_of_range_indices_and_counts_them():
    indices = torch.tensor([[0, 9], [-1, 2], [1, 2]])
    values = torch.tensor([[1.0, 5.0], [7.0, 2.0], [3.0, 4.0]])
    valid = torch.tensor([True, True, False])  # the last row is padding: its indices too
    totals, dropped = sparse_update(empty_totals(3, CPU), indices, values, valid, 0.0)
    assert dropped.item() == 2  # 9 and -1, in valid rows
    assert totals.count.tolist() == [2, 2, 2]  # every valid row holds every feature
    assert totals.active_count.tolist() == [1, 0, 1]
    assert totals.mean.tolist() == [0.5, 0.0, 1.0]
    assert totals.min.tolist() == [0.0, 0.0, 0.0] and totals.max.tolist() == [1.0, 0.0, 2.0]


def test_sparse_updates_over_batches_equal_float64():
    g = torch.Generator().manual_seed(6)
    f, k = 10, 4
    totals = empty_totals(f, CPU)
    dense = []
    for n in (1, 17, 5, 30):
        indices = torch.stack([torch.randperm(f, generator=g)[:k] for _ in range(n)])
        values = torch.rand(n, k, generator=g) * 3
        totals, dropped = sparse_update(totals, indices, values,
                                        torch.ones(n, dtype=torch.bool), 0.0)
        assert dropped.item() == 0
        dense.append(_dense(indices, values, f))
    assert_totals_match(totals, torch.cat(dense).double().numpy(), rel=1e-11)


def test_an_empty_sparse_batch_changes_nothing():
    before = fold([torch.tensor([[1.0, 2.0], [3.0, 4.0]])])
    empty = torch.zeros(0, 2, dtype=torch.int64)
    after, dropped = sparse_update(before, empty, torch.zeros(0, 2),
                                   torch.zeros(0, dtype=torch.bool), 0.0)
    assert dropped.item() == 0
    for a, b in zip(after, before, strict=True):
        assert torch.equal(a, b)
