"""Per-feature value distributions (`record.distributions`) against an offline numpy binning
with the same edges: dense fp32 / bf16 / fp16 through the C kernel and the torch path, TopK
input, padding masks, NaN / Inf, nonzero thresholds, several forwards; quantiles against numpy;
reset / threshold change, save / load, memory, and the int64 widening."""

import numpy as np
import pytest
import torch

from featmon_widget import DistributionResponse, FeatureMonitor
from featmon_widget.monitor.record import distributions as dist_mod
from featmon_widget.monitor.record.cofiring import INT32_MAX
from featmon_widget.monitor.record.distributions import Distributions
from featmon_widget.monitor.record.features import DenseFeatures
from featmon_widget.monitor.stats.backend import Backend
from featmon_widget.monitor.stats.rider import StatisticsRider
from featmon_widget.snapshot.value_bins import EDGES, NOMINAL_EDGES, QUANTILES, bin_quantiles

pytestmark = pytest.mark.fast
D = 40
E32 = EDGES.numpy().astype(np.float32)
PATHS = pytest.mark.parametrize("native", [True, False], ids=["C kernel", "torch"])


def reference(rows, threshold):
    """int64 [D, 32] offline: log bins of the active float32 values, then the inactive."""
    acts = np.concatenate([a for a, _ in rows])
    valid = np.concatenate([v for _, v in rows])
    out = np.zeros((acts.shape[1], 32), np.int64)
    for f in range(acts.shape[1]):
        x = acts[valid, f]
        fin = np.isfinite(x)
        on = x[fin & (x.astype(np.float64) > threshold)]
        out[f, :31] = np.bincount(np.searchsorted(E32, on, side="right"), minlength=31)
        out[f, 31] = int((fin & ~(x.astype(np.float64) > threshold)).sum())
    return out


def batches(seed, dtype, n=3):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        scale = torch.rand(D, generator=gen) * 200
        acts = (torch.randn(3, 5 + i, D, generator=gen) * scale).to(dtype)
        acts[0, 0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e-30])
        acts[1, 0, 4:8] = torch.tensor([2.0**-8, 1.5 * 2.0**-8, 96.0, 2.0**7])  # on edges
        mask = (torch.rand(3, 5 + i, generator=gen) > 0.25).long()
        out.append((acts, mask))
    return out


def counts_of(monitor):
    return monitor._recording.distributions.rows_of(torch.arange(D)).numpy()


@PATHS
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("threshold", [0.0, 0.3, -0.05])
def test_dense_counts_equal_offline_binning(dtype, threshold, native, monkeypatch):
    m = FeatureMonitor(D, threshold=threshold, native=native, compile=False)
    counted_natively = native and m._recording.backend.available()["dense"]
    if counted_natively:  # the statistics pass counts: the torch path must not run
        monkeypatch.setattr(Distributions, "_update_dense", None)
    rows = []
    for acts, mask in batches(1, dtype):
        m.on_activation(acts, mask=mask)
        rows.append((acts.float().reshape(-1, D).numpy(), mask.reshape(-1).numpy() != 0))
    assert np.array_equal(counts_of(m), reference(rows, threshold))


@PATHS
def test_native_and_torch_paths_agree_without_mask(native):
    acts = batches(2, torch.float32, 1)[0][0]
    m = FeatureMonitor(D, native=native, compile=False)
    m.on_activation(acts)
    rows = [(acts.reshape(-1, D).numpy(), np.ones(acts.shape[0] * acts.shape[1], bool))]
    assert np.array_equal(counts_of(m), reference(rows, 0.0))


@pytest.mark.parametrize("threshold", [0.0, 0.5, -0.1])
def test_sparse_counts_equal_offline_binning_of_dense_form(threshold):
    gen = torch.Generator().manual_seed(3)
    m = FeatureMonitor(D, threshold=threshold)
    rows = []
    for _ in range(3):
        idx = torch.stack([torch.randperm(D, generator=gen)[:5] for _ in range(12)])
        idx = idx.reshape(3, 4, 5)
        val = torch.randn(3, 4, 5, generator=gen) * 20
        val[0, 0, 0] = float("nan")
        idx[0, 1, 1] = D + 3  # dropped: out of range
        mask = torch.tensor([[1, 1, 1, 0]] * 3)
        m.on_sparse_activation(idx, val, mask=mask)
        dense = torch.zeros(12, D)
        keep = (idx.reshape(12, 5) < D)
        for r in range(12):
            for j in range(5):
                if keep[r, j]:
                    dense[r, idx.reshape(12, 5)[r, j]] = val.reshape(12, 5)[r, j]
        rows.append((dense.numpy(), mask.reshape(-1).numpy() != 0))
    assert np.array_equal(counts_of(m), reference(rows, threshold))


def test_quantiles_within_the_bin_of_numpy_lower_quantile():
    gen = np.random.default_rng(4)
    m = FeatureMonitor(D)
    x = np.exp(gen.normal(0, 2.5, (500, D))).astype(np.float32) * (gen.random((500, D)) < 0.6)
    m.on_activation(torch.from_numpy(x))
    edges = NOMINAL_EDGES.numpy()
    for f in range(D):
        got = m.get_distribution(f)
        active = np.sort(x[:, f][x[:, f] > 0]).astype(np.float64)
        for q in QUANTILES:
            true = np.quantile(active, q, method="lower")
            b = min(max(int(np.searchsorted(E32, np.float32(true), side="right")), 0), 30)
            lo = 0.0 if b == 0 else edges[b]
            hi = active.max() if b == 30 else edges[b + 1]
            assert lo <= got.quantiles[q] <= hi, (f, q)
            if 0 < b < 30:
                assert 1 / 1.5 <= got.quantiles[q] / true <= 1.5
    assert bin_quantiles([0] * 31, 0.0, 1.0) is None


def test_response_reset_threshold_and_bad_feature():
    m = FeatureMonitor(D)
    m.on_activation(torch.ones(2, 3, D))
    got = m.get_distribution(1)
    assert isinstance(got, DistributionResponse)
    assert got.counts[17] == 6 and sum(got.counts) == 6 and got.inactive == 0  # 1.0: bin 17
    assert len(got.edges) == 32 and got.edges[17] == 1.0 and got.quantiles[0.5] >= 1.0
    with pytest.raises(ValueError, match="feature"):
        m.get_distribution(D)
    m.configure(threshold=2.0)
    got = m.get_distribution(1)
    assert sum(got.counts) == got.inactive == 0 and got.quantiles is None
    m.on_activation(torch.ones(1, 2, D))
    assert m.get_distribution(1).inactive == 2
    m.reset_statistics()
    assert int(m._recording.distributions.counts.sum()) == 0


def test_off_keeps_nothing_and_says_so():
    m = FeatureMonitor(D, selected=[1])
    on = m.state.memory_bytes["distributions"]
    assert on == D * 32 * 4
    m.configure(distributions=False)
    m.on_activation(torch.ones(1, 2, D))
    assert m.state.memory_bytes["distributions"] == 0
    with pytest.raises(ValueError, match="distributions are off"):
        m.get_distribution(1)
    assert m.snapshot().feature_panels[0]["quantiles"] is None


def test_widens_to_int64_before_int32_could_overflow():
    part = Distributions(D, torch.device("cpu"))
    part.bound = INT32_MAX - 2  # as if that many rows were fed since the reset
    part.counts[:, 5] = INT32_MAX - 2
    part.update(DenseFeatures(torch.ones(4, D)), torch.ones(4, dtype=torch.bool), 0.0)
    assert part.counts.dtype == torch.int64
    assert int(part.counts[0, 5]) == INT32_MAX - 2 and int(part.counts[0, 17]) == 4
    part.reset_on(dist_mod.Event.STATISTICS)
    assert part.counts.dtype == torch.int32 and part.bound == 0


def test_torch_path_is_chunked(monkeypatch):
    monkeypatch.setattr(dist_mod, "CHUNK_ELEMENTS", 3 * D)
    acts = batches(5, torch.float32, 1)[0][0].reshape(-1, D)
    a, b = Distributions(D, torch.device("cpu")), Distributions(D, torch.device("cpu"))
    valid = torch.ones(acts.shape[0], dtype=torch.bool)
    a.update(DenseFeatures(acts), valid, 0.0)
    monkeypatch.setattr(dist_mod, "CHUNK_ELEMENTS", 1 << 22)
    b.update(DenseFeatures(acts), valid, 0.0)
    assert torch.equal(a.counts, b.counts)


def test_save_load_round_trip_and_widened(tmp_path):
    m = FeatureMonitor(D, selected=[2])
    for acts, mask in batches(6, torch.float32):
        m.on_activation(acts, mask=mask)
    m.save(tmp_path / "s")
    back = FeatureMonitor.load(tmp_path / "s")
    assert np.array_equal(counts_of(back), counts_of(m))
    assert back.get_distribution(2) == m.get_distribution(2)
    part = m._recording.distributions
    part.bound, part.counts = INT32_MAX + 1, part.counts.to(torch.int64)
    m.save(tmp_path / "w")
    wide = FeatureMonitor.load(tmp_path / "w")._recording.distributions
    assert wide.counts.dtype == torch.int64 and torch.equal(wide.counts, part.counts)


def test_snapshot_histograms_cover_features_selected_after_the_fact():
    m = FeatureMonitor(D)
    m.on_activation(torch.full((2, 3, D), 3.0))
    m.configure(selected=[4, 7])
    snap = m.snapshot()
    counts = np.frombuffer(snap.value_counts, "<f8").reshape(2, 32)
    assert counts[0, 0] == 0 and counts[0, 1 + 20] == 6  # inactive first; 3.0 in log bin 20
    assert np.array_equal(np.frombuffer(snap.value_edges, "<f4"), NOMINAL_EDGES.numpy())
    q = dict(map(tuple, snap.feature_panels[0]["quantiles"]))
    assert 3.0 <= q[0.5] <= 4.0


@pytest.mark.parametrize("avx512", ["1", "0"], ids=["AVX-512 cells", "portable cells"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("wide", [False, True], ids=["int32", "int64"])
def test_the_statistics_pass_counts_over_tiles_threads_and_tails(wide, dtype, avx512,
                                                                  monkeypatch):
    """Several column tiles and threads, 16- and 32-value tails, NaN / Inf in every lane,
    padding rows, int32 and int64 counts, each dtype, AVX-512 and portable cells: what the
    statistics kernel counts along (`StatisticsRider`) against the offline binning."""
    monkeypatch.setenv("FEATMON_AVX512", avx512)
    n, d = 70, 2 * 4096 + 37  # above the kernel's threading size; d not a multiple of 16
    gen = torch.Generator().manual_seed(5)
    acts = torch.relu(torch.randn(n, d, generator=gen) * 3 - 1.5)
    for r, bad in enumerate([float("nan"), float("inf"), -float("inf")]):
        acts[r, r::29] = bad  # every lane position, the tails too
    acts = acts.to(dtype)
    valid = torch.rand(n, generator=gen) > 0.2
    kernel = Backend(native=True, compile=False).dense_moments(acts)
    if kernel is None:
        pytest.skip("no C compiler here")
    part = Distributions(d, torch.device("cpu"))
    if wide:
        part.bound, part.counts = INT32_MAX, part.counts.to(torch.int64)
    rider = StatisticsRider(part.counts_for(n))
    kernel(acts, valid, torch.zeros(d, dtype=torch.float64), 0.0, rider)
    assert rider.counted
    part.update(DenseFeatures(acts), valid, 0.0, rider)
    assert part.counts.dtype == (torch.int64 if wide else torch.int32)
    expected = reference([(acts.float().numpy(), valid.numpy())], 0.0)
    assert np.array_equal(part.counts.to(torch.int64).numpy(), expected)


def test_the_statistics_pass_counts_more_rows_than_its_16_bit_tile_counts_hold():
    """The pass counts into 16-bit tile counts, added into the distributions every 32,768
    rows and at the tile's end: 70,000 rows of one value in one bin (more than 65,535) and
    padding across the flush boundaries count exactly."""
    n, d = 70_000, 40
    acts = torch.full((n, d), 3.0)
    acts[:, 1::2] = torch.rand(n, d // 2, generator=torch.Generator().manual_seed(6)) * 5
    valid = torch.ones(n, dtype=torch.bool)
    valid[32_760:32_790] = False
    kernel = Backend(native=True, compile=False).dense_moments(acts)
    if kernel is None:
        pytest.skip("no C compiler here")
    part = Distributions(d, torch.device("cpu"))
    rider = StatisticsRider(part.counts_for(n))
    kernel(acts, valid, torch.zeros(d, dtype=torch.float64), 0.0, rider)
    part.update(DenseFeatures(acts), valid, 0.0, rider)
    expected = reference([(acts.numpy(), valid.numpy())], 0.0)
    assert expected[0].max() == n - 30 > 65_535
    assert np.array_equal(part.counts.to(torch.int64).numpy(), expected)
