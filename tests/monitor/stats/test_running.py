import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_stats

from featmon_widget.monitor.stats import pending
from featmon_widget.monitor.stats.kernels import StatisticsKernels
from featmon_widget.monitor.stats.running import RunningStats

REL = 1e-9


def _as_dict(stats: RunningStats) -> dict[str, np.ndarray]:
    return {
        "count": stats.count.numpy(),
        "nan_count": stats.nan_count.numpy(),
        "active_count": stats.active_count.numpy(),
        "mean": stats.metric("mean").numpy(),
        "std": stats.metric("std").numpy(),
        "min": stats.metric("min").numpy(),
        "max": stats.metric("max").numpy(),
        "mean_active": stats.mean_active().numpy(),
    }


def assert_matches_reference(stats: RunningStats, values: np.ndarray, threshold: float = 0.0):
    got, ref = _as_dict(stats), reference_stats(values, threshold)
    for key in ("count", "nan_count", "active_count"):
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
    for key in ("min", "max"):
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)  # exact
    scale = np.nanmax(np.abs(np.where(np.isfinite(values), values, 0.0))) if values.size else 1.0
    for key in ("mean", "std", "mean_active"):
        np.testing.assert_allclose(got[key], ref[key], rtol=REL, atol=REL * scale * 1e-3,
                                   equal_nan=True, err_msg=key)


def feed(stats: RunningStats, x: torch.Tensor, chunks: list[int], threshold=0.0, valid=None):
    start = 0
    for size in chunks:
        part = x[start : start + size]
        v = (torch.ones(part.shape[0], dtype=torch.bool) if valid is None
             else valid[start : start + size])
        if part.shape[0]:
            stats.update(part, v, threshold)
        start += size


def _stats(f: int, native: bool) -> RunningStats:
    """Statistics whose dense updates run the native C kernel, or eager torch operations."""
    return RunningStats(f, torch.device("cpu"), StatisticsKernels(compile=False, native=native))


KERNELS = pytest.mark.parametrize("native", [True, False], ids=["native", "eager"])


@pytest.mark.slow  # ten million tokens per case
@KERNELS
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_ten_million_tokens_match_float64_reference(dtype, native):
    """>= 1e7 tokens in chunks: every statistic within 1e-9 relative, min/max exact."""
    gen = torch.Generator().manual_seed(1)
    n, f = 10_000_000, 6
    # Mixed features: sparse ReLU, a large offset (cancellation trap), negative values, constant.
    base = torch.randn(n, f, generator=gen)
    cols = [
        torch.relu(base[:, 0] - 1.5),
        base[:, 1] * 0.01 + 300.0,
        base[:, 2] * 3 - 1,
        torch.full((n,), 2.5),
        torch.relu(base[:, 4]) * 40,
        base[:, 5] ** 2,
    ]
    x = torch.stack(cols, 1).to(dtype)
    x[123, 2] = float("nan")
    x[4567, 4] = float("inf")
    stats = _stats(f, native)
    chunk = 1_048_576
    feed(stats, x, [chunk] * (n // chunk) + [n % chunk])
    assert_matches_reference(stats, x.to(torch.float64).numpy())


@KERNELS
@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 60),
    f=st.integers(1, 5),
    # 0.1 and 1e-40 are not float32 values: `x > threshold` must still mean exactly that.
    threshold=st.sampled_from([0.0, 0.5, -1.0, 0.1, -0.1, 1e-40]),
)
def test_property_any_chunking_matches_reference(data, n, f, threshold, native):
    elements = st.one_of(
        st.floats(-1e4, 1e4, width=32),
        st.sampled_from([0.0, 0.0, float("nan"), float("inf"), -float("inf")]),
    )
    values = np.array(data.draw(st.lists(elements, min_size=n * f, max_size=n * f)),
                      dtype=np.float32).reshape(n, f)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=4)))
    chunks = [b - a for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
    stats = _stats(f, native)
    feed(stats, torch.from_numpy(values), chunks, threshold)
    assert_matches_reference(stats, values.astype(np.float64), threshold)


@KERNELS
@settings(max_examples=30, deadline=None)
@given(data=st.data(), n=st.integers(2, 40))
def test_property_invalid_rows_are_excluded(data, n, native):
    values = np.array(data.draw(st.lists(st.floats(-100, 100, width=32), min_size=n * 3,
                                         max_size=n * 3)), dtype=np.float32).reshape(n, 3)
    valid = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    stats = _stats(3, native)
    feed(stats, torch.from_numpy(values), [n // 2, n - n // 2], valid=torch.from_numpy(valid))
    assert_matches_reference(stats, values[valid].astype(np.float64).reshape(-1, 3))


def test_large_offset_has_no_cancellation():
    """The original's sum_sq - sum^2/n went negative here; shifted sums stay exact."""
    x = (torch.full((100_000, 1), 1e6, dtype=torch.float64)
         + torch.arange(100_000, dtype=torch.float64)[:, None] % 3).float()
    stats = RunningStats(1, torch.device("cpu"), StatisticsKernels(compile=False))
    feed(stats, x, [1000] * 100)
    assert_matches_reference(stats, x.double().numpy())
    assert stats.m2.min() >= 0


def test_empty_feature_reports_undefined_not_zero():
    stats = RunningStats(2, torch.device("cpu"), StatisticsKernels(compile=False))
    x = torch.tensor([[1.0, float("nan")], [2.0, float("nan")]])
    stats.update(x, torch.ones(2, dtype=torch.bool), 0.0)
    assert stats.count.tolist() == [2, 0]
    assert stats.nan_count.tolist() == [0, 2]
    assert torch.isnan(stats.metric("min")[1]) and torch.isnan(stats.metric("max")[1])
    assert torch.isnan(stats.metric("mean")[1])


def test_single_value_std_is_zero():
    stats = RunningStats(1, torch.device("cpu"), StatisticsKernels(compile=False))
    stats.update(torch.tensor([[3.0]]), torch.ones(1, dtype=torch.bool), 0.0)
    assert stats.std().tolist() == [0.0]


@pytest.mark.parametrize("native", [True, False], ids=["native", "torch"])
@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.integers(1, 30), f=st.integers(2, 12),
       threshold=st.sampled_from([0.0, 0.4, -0.5]))
def test_property_sparse_topk_path_equals_dense(native, data, n, f, threshold):
    """The O(N k) sparse path (native CPU table or torch scatters) gives the dense path's
    statistics for TopK outputs, whatever the chunking and wherever the table is merged."""
    k = data.draw(st.integers(1, f))
    seed = data.draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    values, indices = torch.topk(torch.randn(n, f, generator=gen), k, dim=1)
    offset = data.draw(st.sampled_from([0.0, 300.0]))  # a large offset: no cancellation
    values = torch.relu(values) + offset
    if data.draw(st.booleans()):
        values[0, 0] = float("nan")
    valid = torch.rand(n, generator=gen) > 0.3
    dense = torch.zeros(n, f).scatter_(1, indices, values)
    a = RunningStats(f, torch.device("cpu"), StatisticsKernels(compile=False))
    b = RunningStats(f, torch.device("cpu"), StatisticsKernels(compile=False, native=native))
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=3)))
    for start, stop in zip([0, *cuts], [*cuts, n], strict=True):
        if stop > start:
            a.update(dense[start:stop], valid[start:stop], threshold)
            b.update_sparse(indices[start:stop], values[start:stop], valid[start:stop], threshold)
            if data.draw(st.booleans()):
                b.flush()  # a read between batches
    assert (b.pending_table is not None) == native
    for name in ("count", "nan_count", "active_count", "min", "max"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in ("mean", "m2", "active_sum"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-10, atol=1e-9)


def test_sparse_table_is_merged_before_every_read_and_threshold_change(monkeypatch):
    monkeypatch.setattr(pending, "FLUSH_ROWS", 5)
    stats = RunningStats(4, torch.device("cpu"), StatisticsKernels(compile=False, native=True))
    one = torch.ones(2, dtype=torch.bool)
    idx, val = torch.tensor([[0, 1], [2, 3]]), torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    stats.update_sparse(idx, val, one, 0.0)  # first batch: merged at once (shift = its mean)
    assert stats.pending_table.rows_held == 0
    stats.update_sparse(idx, val, one, 0.0)
    assert stats.pending_table.rows_held == 2  # held in the table ...
    assert stats.count.tolist() == [4, 4, 4, 4]  # ... and merged by any read
    assert stats.pending_table.rows_held == 0
    for _ in range(3):
        stats.update_sparse(idx, val, one, 0.0)  # 6 rows > FLUSH_ROWS: merged on the way
    assert stats.pending_table.rows_held == 2
    stats.update_sparse(idx, val, one, 2.5)  # a new threshold merges what the old one judged
    assert stats.pending_table.threshold == 2.5
    stats.reset_active()
    assert stats.active_count.tolist() == [0, 0, 0, 0]
    assert stats.count.tolist() == [12, 12, 12, 12]
    stats.update_sparse(idx, val, one, 2.5)
    stats.reset()
    assert stats.count.tolist() == [0, 0, 0, 0] and stats.pending_table.rows_held == 0


def test_sparse_dense_and_fused_updates_interleave():
    """A dense update after held TopK values merges them first (the shift invariant)."""
    gen = torch.Generator().manual_seed(3)
    values, indices = torch.topk(torch.randn(40, 9, generator=gen), 3, dim=1)
    dense = torch.zeros(40, 9).scatter_(1, indices, values)
    valid = torch.ones(40, dtype=torch.bool)
    a = RunningStats(9, torch.device("cpu"), StatisticsKernels(compile=False))
    b = RunningStats(9, torch.device("cpu"), StatisticsKernels(compile=False, native=True))
    for part in range(4):
        rows = slice(part * 10, part * 10 + 10)
        a.update(dense[rows], valid[rows], 0.0)
        if part % 2:
            b.update(dense[rows], valid[rows], 0.0)
        else:
            b.update_sparse(indices[rows], values[rows], valid[rows], 0.0)
    for name in ("count", "active_count", "min", "max"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in ("mean", "m2", "active_sum"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-12)


@KERNELS
def test_never_seen_features_are_shifted_by_a_counted_row_not_padding(native):
    """Found by the property test above: a batch whose first row is padding holding 1.0 and
    whose one counted value is 1e-12 lost five digits of the mean, shifted by the padding."""
    x = torch.zeros(6, 3)
    x[3, 0], x[4, 0] = 1.0, 1e-12
    valid = torch.tensor([False, False, False, False, True, False])
    stats = _stats(3, native)
    feed(stats, x, [3, 3], valid=valid)
    assert stats.metric("mean")[0].item() == float(torch.tensor(1e-12))
