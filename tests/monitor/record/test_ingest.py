"""`Ingest`, the three ways features come in: dense activations, a TopK SAE's (indices, values)
and a layer output encoded here. Each is checked before anything is recorded, folded into the
statistics exactly, and recorded; an empty pass records nothing."""

import numpy as np
import pytest
import torch
from reference import reference_stats

from featmon_widget import SparseAutoencoder
from featmon_widget.monitor.config import MonitorConfig
from featmon_widget.monitor.record.distributions import INACTIVE, log_bins
from featmon_widget.monitor.record.ingest import (
    Ingest,
    check_dense,
    check_sparse,
    check_token_ids,
)
from featmon_widget.monitor.record.recording import Recording
from featmon_widget.monitor.stats.fused import FusedEncoder
from featmon_widget.monitor.stats.kernels import StatisticsKernels

D, D_IN = 8, 5


def ingest(**config) -> Ingest:
    kernels = StatisticsKernels(compile=False)
    rec = Recording(D, MonitorConfig().replace(D, top_k=3, **config), None, kernels)
    return Ingest(rec, FusedEncoder(kernels))


def assert_stats(rec: Recording, dense: np.ndarray) -> None:
    ref = reference_stats(dense)
    assert rec.stats.count.tolist() == ref["count"].tolist()
    assert rec.stats.active_count.tolist() == ref["active_count"].tolist()
    np.testing.assert_allclose(rec.stats.metric("mean").numpy(), ref["mean"], rtol=1e-12)
    np.testing.assert_array_equal(rec.stats.metric("max").numpy(), ref["max"])


# ---- checks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("acts", "error", "needle"), [
    ([1.0] * D, TypeError, "torch.Tensor"),
    (torch.ones(2, D, dtype=torch.bool), TypeError, "real numbers"),
    (torch.ones(2, D, dtype=torch.complex64), TypeError, "real numbers"),
    (torch.tensor(1.0), ValueError, "d_sae=8"),
    (torch.ones(2, D + 1), ValueError, r"\(2, 9\)"),
])
def test_check_dense_refuses_what_is_not_features(acts, error, needle):
    with pytest.raises(error, match=needle):
        check_dense(acts, D)


@pytest.mark.parametrize(("indices", "values", "error", "needle"), [
    ([[1]], torch.ones(1, 1), TypeError, "indices must be a torch.Tensor"),
    (torch.ones(2, 3, dtype=torch.long), torch.ones(2, 2), ValueError, "one shape"),
    (torch.ones(2, 3), torch.ones(2, 3), TypeError, "indices must be integers"),
    (torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool), TypeError,
     "values must be real"),
    (torch.tensor(1), torch.tensor(1.0), ValueError, "one shape"),
])
def test_check_sparse_refuses_mismatched_or_non_integer_indices(indices, values, error, needle):
    with pytest.raises(error, match=needle):
        check_sparse(indices, values)


def test_check_token_ids_flattens_ids_that_fit_and_names_those_that_do_not():
    assert check_token_ids(None, 2, 3) is None
    assert check_token_ids(torch.arange(6).reshape(2, 3), 2, 3).tolist() == list(range(6))
    with pytest.raises(ValueError, match="do not fit 2 sequence"):
        check_token_ids(torch.arange(6).reshape(3, 2), 2, 3)
    with pytest.raises(TypeError, match="integers"):
        check_token_ids(torch.zeros(2, 3), 2, 3)
    with pytest.raises(TypeError, match="torch.Tensor"):
        check_token_ids([[1, 2, 3]], 1, 3)


# ---- dense -------------------------------------------------------------------------------------


def test_dense_folds_the_real_tokens_into_the_statistics_and_records_them():
    feed = ingest(history_size=50)
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(2, 4, D, generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    feed.dense(acts, "a", None, mask, torch.arange(8).reshape(2, 4))
    rec = feed.recording
    assert_stats(rec, acts.reshape(8, D)[mask.reshape(-1).bool()].double().numpy())
    assert int(rec.tokens) == 6 and int(rec.device_totals().history_count) == 6
    token_column = rec.history_tail(6).columns[7][-6:].tolist()
    assert sorted(token_column) == [0, 1, 2, 3, 6, 7]  # the padding's tokens are not recorded


def test_an_empty_dense_pass_records_nothing_but_bad_token_ids_still_raise():
    feed = ingest()
    feed.dense(torch.zeros(0, D), "a", None, None)
    assert feed.recording.forward_passes == 0 and int(feed.recording.tokens) == 0
    with pytest.raises(ValueError, match="token_ids"):
        feed.dense(torch.zeros(0, D), "a", None, None, torch.zeros(1, 3, dtype=torch.long))


# ---- sparse ------------------------------------------------------------------------------------


def test_sparse_equals_the_dense_matrix_and_counts_a_repeat_once():
    feed = ingest()
    indices = torch.tensor([[[0, 3, 3], [5, 1, 2]]])  # token 0 names feature 3 twice
    values = torch.tensor([[[1.0, 2.0, 9.0], [0.5, 0.25, 4.0]]])
    features, valid = feed.sparse(indices, values, "a", None, None)
    assert valid.tolist() == [True, True]
    assert features.indices.tolist() == [[0, 3, -1], [5, 1, 2]]  # the repeat dropped
    dense = np.zeros((2, D))
    dense[0, [0, 3]] = [1.0, 2.0]
    dense[1, [5, 1, 2]] = [0.5, 0.25, 4.0]
    assert_stats(feed.recording, dense)
    assert int(feed.recording.stats.dropped_indices) == 1


def test_an_empty_sparse_pass_returns_none_and_records_nothing():
    feed = ingest()
    empty = torch.zeros(1, 0, 2, dtype=torch.long)
    assert feed.sparse(empty, torch.zeros(1, 0, 2), "a", None, None) is None
    assert feed.recording.forward_passes == 0


# ---- encoded -----------------------------------------------------------------------------------


class ForeignSAE:
    """Not ours: only `encode` and `d_sae`."""

    d_sae = D

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.W = torch.randn(D_IN, D, generator=g)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W)


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, D_IN, generator=torch.Generator().manual_seed(2))


def test_an_encoded_layer_output_records_the_saes_features():
    feed = ingest()
    sae, x = ForeignSAE(), _x(2, 3)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    feed.encoded(sae, x, "a", mask, None)
    want = sae.encode(x).reshape(6, D)[mask.reshape(-1).bool()]
    assert_stats(feed.recording, want.double().numpy())
    assert int(feed.recording.tokens) == 4


def test_our_topk_sae_is_recorded_sparsely_with_the_same_statistics():
    g = torch.Generator().manual_seed(3)
    sae = SparseAutoencoder.from_tensors(torch.randn(D_IN, D, generator=g), torch.zeros(D),
                                         torch.randn(D, D_IN, generator=g), torch.zeros(D_IN),
                                         architecture="topk", k=2)
    feed = ingest()
    x = _x(1, 4)
    feed.encoded(sae, x, "a", None, None)
    with torch.no_grad():
        want = sae.encode(x).reshape(4, D)
    assert (want > 0).sum(1).max() <= 2
    assert_stats(feed.recording, want.double().numpy())


class RowDroppingSAE(ForeignSAE):
    """Gives one row fewer than it was given tokens."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return super().encode(x).reshape(-1, D)[:-1]


def test_an_encode_of_the_wrong_shape_is_refused_and_changes_nothing():
    feed = ingest()
    with pytest.raises(ValueError, match="encode gave"):
        feed.encoded(RowDroppingSAE(), _x(1, 3), "a", None, None)
    rec = feed.recording
    assert rec.stats.count.sum().item() == 0 and int(rec.tokens) == 0


def test_token_ids_that_do_not_fit_an_encoded_layer_are_ignored():
    feed = ingest(history_size=10)
    feed.encoded(ForeignSAE(), _x(1, 3), "a", None, None, torch.arange(5)[None])
    rec = feed.recording
    assert int(rec.tokens) == 3
    assert rec.history_tail(3).columns[7][-3:].tolist() == [-1, -1, -1]  # unknown tokens


def test_a_health_sampled_forward_compares_the_reconstruction_with_the_input():
    g = torch.Generator().manual_seed(4)
    sae = SparseAutoencoder.from_tensors(torch.randn(D_IN, D, generator=g), torch.zeros(D),
                                         torch.randn(D, D_IN, generator=g), torch.zeros(D_IN))
    feed = ingest(health_every=2)
    for _ in range(3):  # forwards 0 and 2 are sampled
        feed.encoded(sae, _x(1, 4), "a", None, None)
    health = feed.recording.health
    assert health.sampled == 2
    assert int(health.recon_tokens) == 8
    with torch.no_grad():
        x = _x(1, 4).reshape(4, D_IN).double()
        x_hat = sae.decode(sae.encode(_x(1, 4))).reshape(4, D_IN).double()
    assert health.sse.item() == pytest.approx(2 * (x - x_hat).square().sum().item(), rel=1e-5)


class FailingDecodeSAE(ForeignSAE):
    """Encodes, but its decode (run on health-sampled forwards only) raises."""

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("decode failed")


def test_a_health_sample_whose_decode_raises_changes_nothing():
    feed = ingest(health_every=2)
    rec = feed.recording
    feed.encoded(ForeignSAE(), _x(1, 4), "a", None, None)  # forward 0 (sampled; no decode)
    feed.encoded(FailingDecodeSAE(), _x(1, 4), "a", None, None)  # forward 1: not sampled
    state = {"tokens": int(rec.tokens), "count": rec.stats.count.clone(),
             "sum": rec.stats.metric("mean").clone(), "forwards": rec.forward_passes,
             "history": rec.history.count(), "health": rec.health.forwards,
             "distributions": rec.distributions.counts.clone()}
    with pytest.raises(RuntimeError, match="decode failed"):
        feed.encoded(FailingDecodeSAE(), _x(1, 4), "a", None, None)  # forward 2: sampled
    assert int(rec.tokens) == state["tokens"] == 8 and rec.forward_passes == state["forwards"]
    assert torch.equal(rec.distributions.counts, state["distributions"])
    assert torch.equal(rec.stats.count, state["count"])
    assert torch.equal(rec.stats.metric("mean"), state["sum"])
    assert rec.history.count() == state["history"] and rec.health.forwards == state["health"]


@pytest.mark.parametrize("native", [True, False], ids=["C kernel", "torch"])
def test_encoded_forwards_count_their_distributions_sampled_by_health_or_not(native):
    """Health-sampled forwards (every 2nd here) count into staged counts, added once the
    forward is recorded: every forward's values are counted once, as an offline binning."""
    kernels = StatisticsKernels(compile=False, native=native)
    rec = Recording(D, MonitorConfig().replace(D, top_k=3, health_every=2), None,
                    kernels)
    feed, sae = Ingest(rec, FusedEncoder(kernels)), ForeignSAE()
    seen = []
    for i in range(3):
        x = torch.randn(2, 3, D_IN, generator=torch.Generator().manual_seed(10 + i))
        feed.encoded(sae, x, f"r{i}", None, None)
        seen.append(sae.encode(x).reshape(-1, D))
    assert rec.health.sampled == 2
    acts = torch.cat(seen)
    on = acts > 0.0
    bins = torch.where(on, log_bins(acts), INACTIVE)
    expected = torch.zeros(D, 32, dtype=torch.int64)
    expected.scatter_add_(1, bins.t(), torch.ones_like(bins.t()))
    assert torch.equal(rec.distributions.counts.to(torch.int64), expected)
