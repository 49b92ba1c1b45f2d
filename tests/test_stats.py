import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_stats

from featmon_widget.stats import (
    MomentsKernel,
    RunningStats,
    batch_moments,
    shift_for,
    sparse_update,
)

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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_ten_million_tokens_match_float64_reference(dtype):
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
    stats = RunningStats(f, torch.device("cpu"), MomentsKernel(compile=False))
    chunk = 1_048_576
    feed(stats, x, [chunk] * (n // chunk) + [n % chunk])
    assert_matches_reference(stats, x.to(torch.float64).numpy())


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 60),
    f=st.integers(1, 5),
    threshold=st.sampled_from([0.0, 0.5, -1.0]),
)
def test_property_any_chunking_matches_reference(data, n, f, threshold):
    elements = st.one_of(
        st.floats(-1e4, 1e4, width=32),
        st.sampled_from([0.0, 0.0, float("nan"), float("inf"), -float("inf")]),
    )
    values = np.array(data.draw(st.lists(elements, min_size=n * f, max_size=n * f)),
                      dtype=np.float32).reshape(n, f)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=4)))
    chunks = [b - a for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
    stats = RunningStats(f, torch.device("cpu"), MomentsKernel(compile=False))
    feed(stats, torch.from_numpy(values), chunks, threshold)
    assert_matches_reference(stats, values.astype(np.float64), threshold)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), n=st.integers(2, 40))
def test_property_invalid_rows_are_excluded(data, n):
    values = np.array(data.draw(st.lists(st.floats(-100, 100, width=32), min_size=n * 3,
                                         max_size=n * 3)), dtype=np.float32).reshape(n, 3)
    valid = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    stats = RunningStats(3, torch.device("cpu"), MomentsKernel(compile=False))
    feed(stats, torch.from_numpy(values), [n // 2, n - n // 2], valid=torch.from_numpy(valid))
    assert_matches_reference(stats, values[valid].astype(np.float64).reshape(-1, 3))


def test_large_offset_has_no_cancellation():
    """The original's sum_sq - sum^2/n went negative here; shifted sums stay exact."""
    x = (torch.full((100_000, 1), 1e6, dtype=torch.float64)
         + torch.arange(100_000, dtype=torch.float64)[:, None] % 3).float()
    stats = RunningStats(1, torch.device("cpu"), MomentsKernel(compile=False))
    feed(stats, x, [1000] * 100)
    assert_matches_reference(stats, x.double().numpy())
    assert stats.m2.min() >= 0


def test_empty_feature_reports_undefined_not_zero():
    stats = RunningStats(2, torch.device("cpu"), MomentsKernel(compile=False))
    x = torch.tensor([[1.0, float("nan")], [2.0, float("nan")]])
    stats.update(x, torch.ones(2, dtype=torch.bool), 0.0)
    assert stats.count.tolist() == [2, 0]
    assert stats.nan_count.tolist() == [0, 2]
    assert torch.isnan(stats.metric("min")[1]) and torch.isnan(stats.metric("max")[1])
    assert torch.isnan(stats.metric("mean")[1])


def test_single_value_std_is_zero():
    stats = RunningStats(1, torch.device("cpu"), MomentsKernel(compile=False))
    stats.update(torch.tensor([[3.0]]), torch.ones(1, dtype=torch.bool), 0.0)
    assert stats.std().tolist() == [0.0]


def test_compiled_and_eager_kernels_agree():
    gen = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(257, 300, generator=gen))
    x[3, 7] = float("nan")
    x[4, 8] = float("inf")
    x[5, 9] = -float("inf")
    valid = torch.rand(257, generator=gen) > 0.2
    valid[3:6] = True
    shift = shift_for(x, torch.zeros(300, dtype=torch.float64), torch.zeros(300, dtype=torch.long))
    eager = batch_moments(x, valid, shift, 0.1)
    kernel = MomentsKernel(compile=True)
    compiled = kernel(x, valid, shift, 0.1)
    assert kernel.mode == "compiled"
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9)
    chunked = MomentsKernel(compile=False)(x, valid, shift, 0.1)
    for a, b in zip(eager, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9)


def test_compile_failure_falls_back_to_eager(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(torch, "compile", broken)
    kernel = MomentsKernel(compile=True)
    x = torch.rand(4, 3)
    with pytest.warns(RuntimeWarning, match="no compiler"):
        out = kernel(x, torch.ones(4, dtype=torch.bool), torch.zeros(3, dtype=torch.float64), 0.0)
    assert kernel.mode == "eager"
    assert out[0].tolist() == [4, 4, 4]


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.integers(1, 30), f=st.integers(2, 12),
       threshold=st.sampled_from([0.0, 0.4, -0.5]))
def test_property_sparse_topk_path_equals_dense(data, n, f, threshold):
    """The O(N k) scatter path gives the dense path's statistics for TopK outputs."""
    k = data.draw(st.integers(1, f))
    seed = data.draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    values, indices = torch.topk(torch.randn(n, f, generator=gen), k, dim=1)
    values = torch.relu(values)
    if data.draw(st.booleans()):
        values[0, 0] = float("nan")
    valid = torch.rand(n, generator=gen) > 0.3
    dense = torch.zeros(n, f).scatter_(1, indices, values)
    a = RunningStats(f, torch.device("cpu"), MomentsKernel(compile=False))
    b = RunningStats(f, torch.device("cpu"), MomentsKernel(compile=False))
    half = n // 2
    for part in (slice(0, half), slice(half, n)):
        if part.stop > part.start:
            a.update(dense[part], valid[part], threshold)
            b.update_sparse(indices[part], values[part], valid[part], threshold)
    for name in ("count", "nan_count", "active_count", "min", "max"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in ("mean", "m2", "active_sum"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-12)


def test_compiled_sparse_kernel_matches_eager():
    gen = torch.Generator().manual_seed(5)
    values, indices = torch.topk(torch.randn(40, 64, generator=gen), 8, dim=1)
    values = torch.relu(values)
    values[2, 0] = float("inf")
    valid = torch.rand(40, generator=gen) > 0.25
    shift = torch.randn(64, generator=gen, dtype=torch.float64)
    kernel = MomentsKernel(compile=True)
    state = RunningStats(64, torch.device("cpu"))._state()
    state = (*state[:4], shift, *state[5:])
    for threshold in (0.0, -0.1):
        compiled = kernel.sparse_update(state, indices, values, valid, threshold)
        eager = sparse_update(state, indices, values, valid, threshold)
        for a, b in zip(compiled, eager, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert kernel.mode == "compiled"
