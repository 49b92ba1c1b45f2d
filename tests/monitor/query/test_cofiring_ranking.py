"""`FeatureMonitor.get_cofiring`: Jaccard and lift from the counts against float64 numpy, the
ranking (ties to the lower index, the feature itself and features that never fired with it
left out), labels, and the errors."""

import numpy as np
import pytest
import torch

from featmon_widget import CoFiringResponse, FeatureMonitor

pytestmark = pytest.mark.fast
D = 40


def recorded(selected=(4,), threshold=0.0):
    gen = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(6, 20, D, generator=gen))
    acts[..., 9] = acts[..., 4] * 2  # fires exactly with 4
    acts[..., 10] = 1.0  # the densest feature: fires on every token
    mask = (torch.rand(6, 20, generator=gen) > 0.2).long()
    m = FeatureMonitor(D, selected=selected, threshold=threshold)
    m.on_activation(acts, mask=mask)
    valid = mask.reshape(-1).numpy() != 0
    on = (acts.double().reshape(-1, D).numpy() > threshold)[valid]
    return m, on


def test_rows_are_ranked_by_jaccard_against_numpy():
    m, on = recorded()
    got = m.get_cofiring(4, k=8)
    assert isinstance(got, CoFiringResponse)
    s = on[:, 4]
    both = (on & s[:, None]).sum(0)
    union = (on | s[:, None]).sum(0)
    jaccard = both / np.maximum(union, 1)
    jaccard[4] = -1
    order = sorted(range(D), key=lambda f: (-jaccard[f], f))[:8]
    assert [r.feature for r in got.features] == order
    assert got.features[0].feature == 9 and got.features[0].jaccard == 1.0
    assert got.tokens == len(on) and got.active == int(s.sum())
    for row in got.features:
        assert row.both == both[row.feature]
        assert row.active == on[:, row.feature].sum()
        assert row.jaccard == pytest.approx(jaccard[row.feature], rel=1e-15)
        assert row.lift == pytest.approx(row.both * got.tokens / (row.active * got.active))
    # The densest feature co-fires on every one of 4's tokens, yet is not on top.
    dense = next(r for r in got.features if r.feature == 10)
    assert dense.both == got.active and dense.jaccard < 1


def test_the_feature_itself_and_features_that_never_fired_with_it_are_left_out():
    m, _ = recorded(threshold=2.5)
    got = m.get_cofiring(4, k=1000)
    assert all(r.feature != 4 and r.both > 0 for r in got.features)


def test_labels_and_k():
    m, _ = recorded()
    m.set_labels({9: "twice four", 4: "four"})
    got = m.get_cofiring(4, k=2)
    assert len(got.features) == 2 and got.label == "four"
    assert got.features[0].label == "twice four"


def test_a_feature_not_selected_is_a_value_error_saying_to_select_it():
    m, _ = recorded()
    with pytest.raises(ValueError, match="not selected.*select"):
        m.get_cofiring(5)
    with pytest.raises(ValueError, match="feature"):
        m.get_cofiring(D)
    with pytest.raises(ValueError, match="k"):
        m.get_cofiring(4, k=0)


def test_nothing_recorded_yet():
    got = FeatureMonitor(D, selected=(1,)).get_cofiring(1)
    assert got.tokens == 0 and got.active == 0 and got.features == []
