import pytest
import torch

from featmon_widget import FeatureMonitor, SparseAutoencoder
from featmon_widget.monitor.stats.fused import FusedEncoder
from featmon_widget.monitor.stats.kernels import StatisticsKernels


def _sae(d_in=16, d_sae=40, seed=0, architecture="standard"):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(d_in, d_sae, generator=gen) / d_in**0.5
    threshold = None
    if architecture == "jumprelu":
        threshold = torch.rand(d_sae, generator=gen) * 0.4 - 0.1  # some below 0
    return SparseAutoencoder.from_tensors(w, torch.full((d_sae,), -0.2), w.T.contiguous(),
                                          torch.zeros(d_in), architecture=architecture,
                                          threshold=threshold)


@pytest.mark.parametrize("architecture", ["standard", "jumprelu"])
@pytest.mark.parametrize("kernel", ["native", "compiled"])
def test_fused_encode_gives_the_same_features_and_statistics_as_eager(kernel, architecture):
    """On the CPU our SAE's activation runs inside the native statistics pass; without the
    native kernel, encode and statistics are one compiled graph. Both equal eager encode +
    eager statistics."""
    sae = _sae(architecture=architecture)
    fused = FeatureMonitor.for_sae(sae, compile=True, native=kernel == "native")
    eager = FeatureMonitor.for_sae(sae, compile=False)
    gen = torch.Generator().manual_seed(1)
    # Sequence lengths change, one equals d_in: a single compiled graph must serve them all.
    for tokens in (5, 16, 9):
        x = torch.randn(2, tokens, 16, generator=gen)
        mask = torch.ones(2, tokens)
        mask[1, :2] = 0
        fused.encode_and_record(sae, x, "r", mask)
        eager.encode_and_record(sae, x, "r", mask)
    # No public observable: the intended path ran and never fell back.
    if kernel == "native":
        assert fused._recording.stats.compiled.mode == "native"
        assert fused._ingest.fused.runner.mode == "eager"  # no compiled encode was needed
    else:
        assert fused._ingest.fused.runner.mode == "compiled"
    for a, b in zip(fused.get_statistics().features, eager.get_statistics().features,
                    strict=True):
        assert (a.count, a.active_count, a.nan_count) == (b.count, b.active_count, b.nan_count)
        for key in ("mean", "std", "mean_active", "min", "max"):
            va, vb = getattr(a, key), getattr(b, key)
            assert (va is None and vb is None) or abs(va - vb) <= 1e-6 * max(1.0, abs(vb)), key
    # What rides on the pass (distributions, the sample) counts the activated values.
    da, db = fused._recording.distributions, eager._recording.distributions
    assert int(da.counts[:, :-1].sum()) > 0
    assert torch.equal(da.counts, db.counts)
    assert torch.equal(fused._recording.samples.key, eager._recording.samples.key)
    ha, hb = fused.get_history(limit=100), eager.get_history(limit=100)
    assert [r.token_position for r in ha.records] == [r.token_position for r in hb.records]
    assert [[f for f, _ in r.top_k] for r in ha.records] == \
        [[f for f, _ in r.top_k] for r in hb.records]


def test_foreign_sae_is_not_compiled():
    class Foreign(torch.nn.Module):
        d_sae = 4

        def encode(self, x):
            return torch.relu(x[..., :4])

    enc = FusedEncoder(StatisticsKernels(compile=True))
    x = torch.randn(3, 6)
    mean = torch.zeros(4, dtype=torch.float64)
    count = torch.zeros(4, dtype=torch.long)
    flat, _, moments, _ = enc(Foreign(), x, torch.ones(3, dtype=torch.bool), mean, count, 0.0,
                           fuse=False)
    assert enc.runner.mode == "eager"  # never compiled
    assert torch.equal(flat, torch.relu(x[:, :4]))
    assert moments[0].tolist() == [3, 3, 3, 3]


@pytest.mark.parametrize("architecture", ["standard", "jumprelu"])
def test_native_activation_gives_every_row_the_encoded_features(architecture):
    """Padding rows are not counted, but they are activated too: the features handed on are
    exactly `sae.encode(x)`, bit for bit, NaN included."""
    sae = _sae(architecture=architecture)
    enc = FusedEncoder(StatisticsKernels(compile=True))
    x = torch.randn(7, 16, generator=torch.Generator().manual_seed(4))
    x[2, 3] = float("nan")
    valid = torch.tensor([True, False, True, True, False, True, True])
    mean = torch.zeros(40, dtype=torch.float64)
    count = torch.zeros(40, dtype=torch.long)
    out = enc(sae, x, valid, mean, count, 0.05, tokens=7)
    assert enc.statistics.mode == "native"
    want = sae.encode(x)
    assert torch.equal(out.features.isnan(), want.isnan())
    assert torch.equal(out.features.nan_to_num(), want.nan_to_num())
    reference = StatisticsKernels(compile=False, native=False)(want, valid, out.shift, 0.05)
    for got, expected in zip(out.moments, reference, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert out.maxima is not None and out.maxima.value.shape == (1, 40)
