"""Ranking in O(d_sae) (`ranking.top_k_stable`) gives exactly the order of a full stable sort:
highest first, ties to the lower index, NaN last — at small widths with many ties (hypothesis)
and at a million features."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from featmon_widget import FeatureMonitor
from featmon_widget.monitor.ranking import top_k_stable


def stable_order(values: torch.Tensor, k: int) -> torch.Tensor:
    key = torch.where(torch.isnan(values), float("-inf"), values.double())
    return torch.sort(key, descending=True, stable=True).indices[:k]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0, 2.0, -1.0, float("nan"), float("-inf"),
                                 float("inf")]), min_size=1, max_size=200),
       st.integers(1, 60))
def test_top_k_equals_a_full_stable_sort(values, k):
    v = torch.tensor(values, dtype=torch.float64)
    assert torch.equal(top_k_stable(v, k), stable_order(v, k))


def test_top_k_at_a_million_features_with_ties():
    g = torch.Generator().manual_seed(0)
    v = torch.randint(0, 50, (1 << 20,), generator=g).double()  # ~20,000 ties per value
    v[torch.rand(1 << 20, generator=g) < 0.5] = float("nan")
    for k in (1, 10, 1000):
        assert torch.equal(top_k_stable(v, k), stable_order(v, k))


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
