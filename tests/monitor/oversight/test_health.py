"""Health: L0, dead and ultra-rare features, reconstruction quality on sampled forwards, equal
to a float64 offline computation on the same batches; the sampling rule is exact."""

import pytest
import torch

from featmon_widget import FeatureMonitor, SparseAutoencoder
from featmon_widget.monitor.oversight.health import HEALTH_TOKENS, L0_EDGES

D_IN, D_SAE = 12, 40


def make_sae(architecture: str = "standard", **kw) -> SparseAutoencoder:
    g = torch.Generator().manual_seed(2)
    return SparseAutoencoder.from_tensors(
        torch.randn(D_IN, D_SAE, generator=g) * 0.4, torch.randn(D_SAE, generator=g) * 0.2 - 0.3,
        torch.randn(D_SAE, D_IN, generator=g) * 0.3, torch.randn(D_IN, generator=g) * 0.1,
        architecture=architecture, **kw)


def batches(n: int = 10, tokens: int = 5):
    g = torch.Generator().manual_seed(3)
    out = []
    for i in range(n):
        x = torch.randn(2, tokens, D_IN, generator=g) * (1 + i % 3)
        mask = torch.ones(2, tokens, dtype=torch.long)
        mask[1, : i % 4] = 0  # some left padding
        out.append((x, mask))
    return out


def offline(sae, data, every, threshold, floor):
    """The float64 reference over the same batches."""
    l0_all, l0_sampled, xs, xhats = [], [], [], []
    active = torch.zeros(D_SAE, dtype=torch.int64)
    for i, (x, mask) in enumerate(data):
        with torch.no_grad():
            f = sae.encode(x).reshape(-1, D_SAE)
            xh = sae.decode(f).reshape(-1, D_IN)
        keep = mask.reshape(-1).bool()
        l0 = (f > threshold).sum(1)[keep]
        l0_all.append(l0)
        active += (f[keep] > threshold).sum(0)
        if every and i % every == 0:
            l0_sampled.append(l0)
            picked = torch.zeros_like(keep)
            picked[::-(-keep.numel() // HEALTH_TOKENS)] = True  # spread over the forward
            xs.append(x.reshape(-1, D_IN)[picked & keep].double())
            xhats.append(xh[picked & keep].double())
    tokens = sum(len(t) for t in l0_all)
    x, xh = torch.cat(xs), torch.cat(xhats)
    sse = (x - xh).square().sum()
    return {
        "l0_mean": float(torch.cat(l0_all).double().sum() / tokens),
        "l0_hist": torch.bucketize(torch.cat(l0_sampled), torch.tensor(L0_EDGES[1:]),
                                   right=True).bincount(minlength=len(L0_EDGES)),
        "dead": int((active == 0).sum()),
        "rare": int(((active > 0) & (active.double() / tokens < floor)).sum()),
        "mse": float(sse / x.numel()),
        "fvu": float(sse / (x - x.mean(0)).square().sum()),
        "cosine": float(torch.nn.functional.cosine_similarity(x, xh, dim=1).mean()),
        "recon_tokens": x.shape[0], "tokens": tokens,
    }


def record(monitor, sae, data):
    for x, mask in data:
        monitor.encode_and_record(sae, x, "r", mask)


@pytest.mark.parametrize("every, tokens", [(1, 5), (3, 5), (8, 5), (2, 300)])
def test_health_equals_a_float64_offline_computation(every, tokens):
    """With 300 tokens a row, a forward has 600 token slots: at most HEALTH_TOKENS of them,
    every 10th, are decoded; every one counts for L0."""
    sae, data = make_sae(), batches(tokens=tokens)
    monitor = FeatureMonitor.for_sae(sae, compile=False, health_every=every, rare_floor=0.05,
                                     threshold=0.1)
    record(monitor, sae, data)
    want = offline(sae, data, every, 0.1, 0.05)
    got = monitor.get_health()
    assert got.tokens == want["tokens"]
    assert got.l0_mean == pytest.approx(want["l0_mean"], rel=1e-12)
    assert got.l0_counts == want["l0_hist"][: len(got.l0_counts)].tolist()
    assert sum(got.l0_counts) == want["l0_hist"].sum()
    assert (got.dead_features, got.ultra_rare_features) == (want["dead"], want["rare"])
    assert got.reconstruction_tokens == want["recon_tokens"]
    for name in ("mse", "fvu", "cosine"):
        assert getattr(got, name) == pytest.approx(want[name], rel=1e-9), name
    assert got.sampled_forwards == len(range(0, len(data), every))


def test_the_sampling_rule_is_exact_and_zero_turns_it_off():
    sae, data = make_sae(), batches(10)
    monitor = FeatureMonitor.for_sae(sae, compile=False, health_every=4)
    record(monitor, sae, data)
    assert monitor.get_health().sampled_forwards == 3  # forwards 0, 4, 8
    off = FeatureMonitor.for_sae(sae, compile=False, health_every=0)
    record(off, sae, data)
    health = off.get_health()
    assert health.sampled_forwards == 0 and sum(health.l0_counts) == 0
    assert health.mse is health.fvu is health.cosine is None
    assert health.l0_mean is not None  # exact over every token, sampled or not


def test_topk_sae_reconstructs_from_its_sparse_features():
    sae = make_sae("topk", k=5)
    data = batches(4)
    monitor = FeatureMonitor.for_sae(sae, compile=False, health_every=1)
    record(monitor, sae, data)
    want = offline(sae, data, 1, 0.0, 1e-5)
    got = monitor.get_health()
    for name in ("mse", "fvu", "cosine"):
        assert getattr(got, name) == pytest.approx(want[name], rel=1e-6), name


def test_a_transcoder_or_an_sae_without_decode_has_no_reconstruction():
    sae = make_sae()
    sae.cfg["metadata"]["reconstructs_input"] = False

    class EncodeOnly:
        d_sae = D_SAE

        def encode(self, x):
            return sae.encode(x)

    for model in (sae, EncodeOnly()):
        monitor = FeatureMonitor(D_SAE, compile=False, health_every=1)
        record(monitor, model, batches(2))
        health = monitor.get_health()
        assert health.reconstruction_tokens == 0 and health.fvu is None
        assert sum(health.l0_counts) == health.tokens  # L0 is still counted


def test_a_threshold_change_or_reset_restarts_health():
    sae = make_sae()
    monitor = FeatureMonitor.for_sae(sae, compile=False, health_every=1)
    record(monitor, sae, batches(3))
    monitor.configure(threshold=0.5)
    assert monitor.get_health().tokens == 0 and monitor.get_health().sampled_forwards == 0
    record(monitor, sae, batches(2))
    assert monitor.get_health().tokens > 0
    monitor.reset_statistics()
    assert monitor.get_health().reconstruction_tokens == 0


def test_health_settings_are_checked():
    monitor = FeatureMonitor(4, compile=False)
    with pytest.raises(ValueError, match="health_every"):
        monitor.configure(health_every=-1)
    with pytest.raises(ValueError, match="rare_floor"):
        monitor.configure(rare_floor=2.0)
    assert monitor.configure(health_every=0).health_every == 0


def test_a_snapshot_reads_the_firing_counts_once_for_its_histogram_and_its_health(monkeypatch):
    from featmon_widget.monitor.record.recording import Recording

    sae, data = make_sae(), batches()
    monitor = FeatureMonitor.for_sae(sae, compile=False, rare_floor=0.05, threshold=0.1)
    record(monitor, sae, data)
    want = offline(sae, data, 8, 0.1, 0.05)
    calls = []
    original = Recording.firing_summary
    monkeypatch.setattr(Recording, "firing_summary",
                        lambda self: calls.append(1) or original(self))
    snap = monitor.snapshot()
    assert len(calls) == 1
    health = snap.oversight["health"]
    assert (health["dead"], health["ultra_rare"]) == (want["dead"], want["rare"])
    assert health["dead"] == snap.never_fired + snap.never_seen
    assert health["l0_mean"] == pytest.approx(want["l0_mean"], rel=1e-3)


@pytest.mark.parametrize("distributions", [True, False], ids=["distributions", "alone"])
def test_the_statistics_pass_counts_the_l0_of_sampled_forwards_as_the_torch_path(
        monkeypatch, distributions):
    """Dense CPU forwards: each token's L0 comes from the statistics pass (several tiles and
    threads, padding, NaN / Inf, which are not active), with or without the distributions,
    equal to the torch count."""
    from featmon_widget.monitor.oversight import health as health_module
    d = 2 * 4096 + 37
    gen = torch.Generator().manual_seed(4)
    data = []
    for i in range(3):
        x = torch.relu(torch.randn(2, 40, d, generator=gen) - 1.5)
        x.view(-1)[i::313] = float("nan")
        x.view(-1)[i + 5::401] = float("inf")
        mask = (torch.rand(2, 40, generator=gen) > 0.2).long()
        data.append((x, mask))
    monitors = {native: FeatureMonitor(d, native=native, compile=False, health_every=1,
                                       distributions=distributions)
                for native in (True, False)}
    if not monitors[True]._recording.backend.available()["dense"]:
        pytest.skip("no C compiler here")
    for x, mask in data:
        monitors[False].on_activation(x, mask=mask)
    torch_path = monitors[False]._recording.health.l0_counts.clone()
    monkeypatch.setattr(health_module, "_active_per_row", None)  # must not run now
    for x, mask in data:
        monitors[True].on_activation(x, mask=mask)
    assert torch.equal(monitors[True]._recording.health.l0_counts, torch_path)
    assert int(torch_path.sum()) == sum(int(m.sum()) for _, m in data)
