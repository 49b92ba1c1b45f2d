"""Ranking in O(d_sae) (`ranking.top_k_stable`) gives exactly the order of a full stable sort:
highest first, ties to the lower index, NaN last — at small widths with many ties (hypothesis)
and at a million features; both the compiled CPU scan (where the monitor's backend runs it) and
the torch path (GPUs, no compiler, `native=False`)."""

from functools import partial

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from featmon_widget import FeatureMonitor
from featmon_widget.monitor.query.ranking import top_k_of_metric, top_k_stable, top_k_stable_torch
from featmon_widget.monitor.stats.backend import Backend

NATIVE = Backend(native=True)
BOTH_PATHS = pytest.mark.parametrize(
    "top_k", [partial(top_k_stable, backend=NATIVE), top_k_stable_torch],
    ids=["dispatch", "torch"])


def stable_order(values: torch.Tensor, k: int) -> torch.Tensor:
    key = torch.where(torch.isnan(values), float("-inf"), values.double())
    return torch.sort(key, descending=True, stable=True).indices[:k]


def test_the_compiled_scan_is_what_the_cpu_uses():
    values = torch.zeros(100, dtype=torch.float64)
    assert NATIVE.top_k(values, 10) is not None
    assert Backend(native=False).top_k(values, 10) is None
    assert NATIVE.top_k(values, 25) is None  # k not below a quarter: the stable sort


@BOTH_PATHS
@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0, 2.0, -1.0, float("nan"), float("-inf"),
                                 float("inf")]), min_size=1, max_size=200),
       st.integers(1, 60))
def test_top_k_equals_a_full_stable_sort(top_k, values, k):
    v = torch.tensor(values, dtype=torch.float64)
    assert torch.equal(top_k(v, k), stable_order(v, k))


@BOTH_PATHS
@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 40), st.integers(0, 2**31), st.integers(1, 12))
def test_top_k_of_longer_arrays_with_few_values(top_k, n, k, seed, distinct):
    # Longer than the compiled scan's 256-value blocks, with ties across block edges.
    g = torch.Generator().manual_seed(seed)
    v = torch.randint(0, distinct, (n,), generator=g).double()
    v[torch.rand(n, generator=g) < 0.2] = float("nan")
    v[torch.rand(n, generator=g) < 0.05] = float("-inf")
    assert torch.equal(top_k(v, k), stable_order(v, k))


@BOTH_PATHS
@pytest.mark.parametrize("order", ["ascending", "descending", "constant"])
def test_top_k_when_every_value_beats_the_kept_ones(top_k, order):
    # Ascending values replace the weakest kept one at every step: the heap's worst case.
    v = torch.arange(100_000, dtype=torch.float64)
    v = {"ascending": v, "descending": -v, "constant": torch.zeros_like(v)}[order]
    for k in (1, 7, 500):
        assert torch.equal(top_k(v, k), stable_order(v, k))


def test_top_k_of_float32_and_views_takes_the_torch_path_with_the_same_order():
    g = torch.Generator().manual_seed(3)
    v = torch.randint(0, 9, (20_000,), generator=g).float()
    assert NATIVE.top_k(v, 25) is None
    assert torch.equal(top_k_stable(v, 25, NATIVE), stable_order(v, 25))
    strided = v.double()[::2]
    assert NATIVE.top_k(strided, 25) is None
    assert torch.equal(top_k_stable(strided, 25, NATIVE), stable_order(strided, 25))


@BOTH_PATHS
def test_top_k_at_a_million_features_with_ties(top_k):
    g = torch.Generator().manual_seed(0)
    v = torch.randint(0, 50, (1 << 20,), generator=g).double()  # ~20,000 ties per value
    v[torch.rand(1 << 20, generator=g) < 0.5] = float("nan")
    for k in (1, 10, 1000):
        assert torch.equal(top_k(v, k), stable_order(v, k))


@pytest.mark.parametrize("metric", ["mean", "count", "active_ratio", "max", "std"])
def test_top_features_of_a_million_feature_monitor_are_the_exact_order(metric):
    d_sae = 1 << 20
    monitor = FeatureMonitor(d_sae, compile=False, examples_per_feature=0)
    g = torch.Generator().manual_seed(1)
    indices = torch.randint(0, 5000, (512, 32), generator=g)  # few features: many ties at 0
    values = torch.randint(1, 4, (512, 32), generator=g).float()
    monitor.on_sparse_activation(indices, values)
    got = [f.feature_idx for f in monitor.get_top_features(50, metric).features]
    reference = monitor._recording.stats.metric(metric)
    assert got == stable_order(reference, 50).tolist()
    snap_features = monitor.snapshot(table_rows=20, metric=metric).table_features
    assert list(torch.frombuffer(bytearray(snap_features), dtype=torch.int32)) == got[:20]


@pytest.mark.parametrize("metric", ["mean", "active_ratio", "std"])
def test_ranking_a_monitored_subset_or_a_search_is_the_exact_order_among_them(metric):
    d_sae = 1 << 16
    g = torch.Generator().manual_seed(2)
    subset = sorted(set(torch.randint(0, 4000, (250,), generator=g).tolist()))  # at most 256
    indices = torch.randint(0, 4000, (256, 32), generator=g)
    values = torch.randint(1, 4, (256, 32), generator=g).float()
    labels = {f: f"label {f % 7}" for f in range(0, 4000, 3)}
    full = FeatureMonitor(d_sae, compile=False, examples_per_feature=0)
    part = FeatureMonitor(d_sae, compile=False, examples_per_feature=0, features=subset)
    for monitor in (full, part):
        monitor.on_sparse_activation(indices, values)
    reference = full._recording.stats.metric(metric)

    def among(features: list[int], k: int) -> list[int]:
        keep = torch.tensor(features)
        return keep[stable_order(reference[keep], k)].tolist()

    got = [f.feature_idx for f in part.get_top_features(40, metric).features]
    assert got == among(subset, 40)
    full.set_labels(labels)
    searched = full.snapshot(table_rows=30, metric=metric, search="label 3").table_features
    assert list(torch.frombuffer(bytearray(searched), dtype=torch.int32)) == among(
        sorted(f for f, text in labels.items() if "label 3" in text), 30)


def totals_with_every_case(n: int, seed: int):
    """Running totals with never-seen features, single values, equal metrics and NaN/inf."""
    from featmon_widget.monitor.stats.moments import Totals

    g = torch.Generator().manual_seed(seed)
    count = torch.randint(0, 4, (n,), generator=g)
    active = torch.minimum(torch.randint(0, 4, (n,), generator=g), count)
    grid = torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=torch.float64)

    def pick() -> torch.Tensor:  # few distinct values: many equal metrics
        return grid[torch.randint(0, 4, (n,), generator=g)]

    m2 = pick() - 0.25  # a tiny negative M2 (rounding) gives NaN, as torch's sqrt does
    mn, mx = -pick(), pick()
    mn[count == 0], mx[count == 0] = float("inf"), float("-inf")
    return Totals(count, torch.zeros(n, dtype=torch.int64), active, pick() * active, pick(), m2,
                  mn, mx)


@pytest.mark.parametrize("backend", [NATIVE, None], ids=["scan", "torch"])
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 30), st.integers(0, 2**31),
       st.sampled_from(["mean", "mean_active", "max", "min", "active_ratio", "count",
                        "active_count", "std"]))
def test_top_k_of_a_metric_equals_ranking_the_metric_array(backend, n, k, seed, metric):
    from featmon_widget.monitor.stats.running import metric_of

    totals = totals_with_every_case(n, seed)
    assert torch.equal(top_k_of_metric(totals, metric, k, backend),
                       stable_order(metric_of(totals, metric), k))
