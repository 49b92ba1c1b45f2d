"""Drift against a reference (a live monitor, a saved one, a SAELens sparsity file): per-feature
log-ratio and z, and the summary divergence, equal to a reference computation."""

import math

import pytest
import torch

from featmon_widget import FeatureMonitor

D = 30


def fed(seed: int, shift: float, tokens: int = 400) -> FeatureMonitor:
    g = torch.Generator().manual_seed(seed)
    monitor = FeatureMonitor(D, compile=False)
    acts = torch.randn(tokens, D, generator=g) + shift * torch.linspace(-1, 1, D)
    monitor.on_activation(acts)
    return monitor


def counts(monitor: FeatureMonitor) -> tuple[list[int], int]:
    rows = monitor.get_statistics(list(range(D))).features
    return [r.active_count for r in rows], monitor.state.total_tokens


def expected(live, ref, density_only=False):
    (k, n), (kr, nr) = live, ref
    out = []
    for f in range(D):
        p = k[f] / n
        if density_only:
            pr = kr[f] / nr
            var = pr * (1 - pr) / n
            z = (p - pr) / math.sqrt(var) if var > 0 else 0.0
            ratio = math.log10((k[f] + 0.5) / (n + 1)) - math.log10(max(pr, 1e-10))
        else:
            pooled = (k[f] + kr[f]) / (n + nr)
            var = pooled * (1 - pooled) * (1 / n + 1 / nr)
            z = (p - kr[f] / nr) / math.sqrt(var) if var > 0 else 0.0
            ratio = math.log10((k[f] + 0.5) / (n + 1)) - math.log10((kr[f] + 0.5) / (nr + 1))
        out.append((f, p, z, ratio))
    total, total_r = sum(k), sum(kr)
    js = 0.0
    for f in range(D):
        a, b = k[f] / total, kr[f] / total_r
        m = (a + b) / 2
        js += 0.5 * (a * math.log2(a / m) if a else 0) + 0.5 * (b * math.log2(b / m) if b else 0)
    return out, js


@pytest.mark.parametrize("direction", ["hot", "cold"])
def test_drift_against_a_live_monitor_equals_the_two_proportion_test(direction):
    live, ref = fed(0, 1.5), fed(1, 0.0)
    live.set_reference(ref)
    got = live.get_drift(k=D, direction=direction)
    rows, js = expected(counts(live), counts(ref))
    order = sorted(rows, key=lambda r: (-r[2] if direction == "hot" else r[2], r[0]))
    assert [f.feature for f in got.features] == [r[0] for r in order]
    for feature, (_f, p, z, ratio) in zip(got.features, order, strict=True):
        assert feature.live_density == pytest.approx(p, rel=1e-12)
        assert feature.z == pytest.approx(z, rel=1e-9, abs=1e-12)
        assert feature.log_ratio == pytest.approx(ratio, rel=1e-9, abs=1e-12)
    assert got.divergence == pytest.approx(js, rel=1e-9)
    assert got.test.startswith("two-proportion")
    assert got.features[0].z > 3 if direction == "hot" else got.features[0].z < -3


def test_a_saved_monitor_and_a_live_one_give_the_same_drift(tmp_path):
    live, ref = fed(0, 1.0), fed(1, 0.0)
    ref.save(tmp_path / "ref")
    live.set_reference(ref)
    from_live = live.get_drift(5)
    assert "saved monitor" in live.set_reference(tmp_path / "ref")
    assert live.get_drift(5).features == from_live.features


def test_a_sparsity_file_is_a_one_sample_reference(tmp_path):
    live, ref = fed(0, 1.0), fed(1, 0.0)
    path = ref.export_sparsity(tmp_path)
    live.set_reference(path)
    got = live.get_drift(k=D)
    assert got.test.startswith("one-sample binomial")
    rows, _ = expected(counts(live), counts(ref), density_only=True)
    by_feature = {f.feature: f for f in got.features}
    for f, _p, z, ratio in rows:
        # The file holds float32 log10 densities: a few ulps of float32 apart.
        assert by_feature[f].z == pytest.approx(z, rel=1e-4, abs=1e-4)
        assert by_feature[f].log_ratio == pytest.approx(ratio, rel=1e-5, abs=1e-6)


def test_drift_errors_are_clear():
    live = fed(0, 0.0)
    with pytest.raises(ValueError, match="set_reference"):
        live.get_drift()
    live.set_reference(fed(1, 0.0))
    with pytest.raises(ValueError, match="direction"):
        live.get_drift(direction="up")
    with pytest.raises(ValueError, match="features"):
        live.set_reference(FeatureMonitor(D + 1, compile=False))
    with pytest.raises(TypeError, match="reference"):
        live.set_reference(42)
    assert live.set_reference(None) is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), 0.5])
def test_a_sparsity_file_with_impossible_densities_is_refused(tmp_path, bad):
    from safetensors.torch import save_file

    live = fed(0, 0.0)
    live.set_reference(fed(1, 0.0))
    log_density = torch.full((D,), -2.0)
    log_density[7] = bad  # NaN / inf, or log10 above 0: a density over 1
    path = tmp_path / "sparsity.safetensors"
    save_file({"sparsity": log_density}, str(path))
    with pytest.raises(ValueError, match="feature 7"):
        live.set_reference(path)
    assert live.get_drift(k=3).divergence >= 0  # the earlier reference is kept
