import threading
import warnings

import numpy as np
import pytest
import torch
from reference import reference_stats

from featmon_widget import FeatureMonitor, SparseAutoencoder


def _acts(b=2, t=5, f=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(b, t, f, generator=gen) - 0.3)


def test_statistics_cover_all_tokens_and_exclude_padding():
    m = FeatureMonitor(16, history_size=100)
    a, b = _acts(seed=1), _acts(seed=2)
    mask = torch.ones(2, 5)
    mask[0, :2] = 0
    m.on_activation(a, mask=mask)
    m.on_activation(b)
    kept = torch.cat([a[0, 2:], a[1], b.reshape(-1, 16)]).double().numpy()
    ref = reference_stats(kept)
    stats = m.get_statistics()
    assert stats.total_activations == len(kept)
    assert len(stats.features) == 16
    for row in stats.features:
        i = row.feature_idx
        assert row.count == ref["count"][i]
        assert row.active_count == ref["active_count"][i]
        assert row.min == ref["min"][i] and row.max == ref["max"][i]
        assert row.mean == pytest.approx(ref["mean"][i], rel=1e-12)
        assert row.std == pytest.approx(ref["std"][i], rel=1e-9)
        assert row.active_ratio == pytest.approx(ref["active_count"][i] / ref["count"][i])
    assert m.state.total_tokens == len(kept)
    assert m.state.forward_passes == 2


def test_all_features_mode_counts_zeros():
    """The original reported active_ratio 1.0 in all-features mode; zeros count here."""
    m = FeatureMonitor(2)
    m.on_activation(torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0], [4.0, 0.0]]))
    f0 = m.get_statistics([0]).features[0]
    assert f0.count == 4 and f0.active_count == 2 and f0.active_ratio == 0.5
    assert f0.mean == 1.5 and f0.mean_active == 3.0


def test_empty_monitor_reports_none_not_zero():
    m = FeatureMonitor(4)
    row = m.get_statistics([1]).features[0]
    assert (row.count, row.min, row.max, row.mean, row.std, row.mean_active) == (
        0, None, None, None, None, None)


def test_history_records_positions_requests_and_top_k():
    m = FeatureMonitor(16, features=[3, 4], top_k=3, history_size=50)
    with m.request("req-1"):
        m.on_activation(_acts(t=4))
        m.on_activation(_acts(t=1, seed=5))
    m.on_activation(_acts(b=1, t=2, seed=6))
    hist = m.get_history(limit=100)
    assert hist.total == 12
    newest = hist.records[0]
    assert newest.request_id.startswith("auto-") and newest.token_position == 1
    req = m.get_history(limit=100, request_id="req-1")
    assert req.total == 10
    row1 = m.get_history(limit=100, request_id="req-1/1").records
    assert [r.token_position for r in row1] == [4, 3, 2, 1, 0]
    rec = row1[-1]
    assert set(rec.activations) == {3, 4}
    acts = _acts(t=4)[1, 0]
    assert rec.activations[3] == pytest.approx(float(acts[3]))
    expected = torch.topk(acts, 3)
    assert [f for f, _ in rec.top_k] == [i for i, v in zip(expected.indices.tolist(),
                                                         expected.values.tolist(), strict=True)
                                         if v > 0]
    assert m.get_history(limit=2).total == 12 and len(m.get_history(limit=2).records) == 2


def test_configure_changes_only_given_fields_and_rejects_bad_input():
    m = FeatureMonitor(16, history_size=30, top_k=4)
    m.on_activation(_acts())
    before_state = m.state
    before_stats = m.get_statistics()
    with pytest.raises(ValueError, match="16"):
        m.configure(features=[1, 16])
    with pytest.raises(TypeError, match="bogus"):
        m.configure(history_size=40, bogus=1)
    assert m.state == before_state
    assert m.get_statistics() == before_stats
    state = m.configure(features=[1, 2])
    assert state.history_size == 30 and state.top_k == 4
    assert state.monitored_features == [1, 2]
    assert state.history_count == 10  # kept across the reconfigure


def test_features_subset_limits_reports_but_keeps_all_statistics():
    m = FeatureMonitor(8, features=[2, 5])
    m.on_activation(_acts(f=8))
    assert [r.feature_idx for r in m.get_statistics().features] == [2, 5]
    assert m.reset_statistics() == 2
    m.on_activation(_acts(f=8))
    m.configure(features=None)
    assert len(m.get_statistics().features) == 8
    assert m.get_statistics([7]).features[0].count == 10


def test_enable_pauses_recording_and_keeps_data():
    m = FeatureMonitor(16)
    m.on_activation(_acts())
    assert m.enable(False).enabled is False
    m.on_activation(_acts())
    assert m.state.total_tokens == 10
    m.enable(True)
    m.on_activation(_acts())
    assert m.state.total_tokens == 20


def test_clear_history_and_reset_statistics():
    m = FeatureMonitor(16)
    m.on_activation(_acts())
    assert m.clear_history() == 10
    assert m.get_history().total == 0
    assert m.state.total_tokens == 10  # statistics untouched
    assert m.reset_statistics() == 16
    s = m.state
    assert s.total_tokens == 0 and s.forward_passes == 0
    assert m.get_statistics([0]).features[0].count == 0


def test_threshold_change_restarts_active_statistics():
    m = FeatureMonitor(4)
    m.on_activation(torch.tensor([[0.5, 1.0, 0.0, 2.0]]))
    since = m.state.active_since
    m.configure(threshold=0.75)
    m.on_activation(torch.tensor([[0.5, 1.0, 0.0, 2.0]]))
    rows = m.get_statistics().features
    assert [r.active_count for r in rows] == [0, 1, 0, 1]
    assert [r.count for r in rows] == [2, 2, 2, 2]
    assert m.state.active_since >= since


@pytest.mark.parametrize("metric", ["mean", "mean_active", "max", "active_ratio", "count", "std"])
def test_top_features_rank_every_metric_with_stable_ties(metric):
    m = FeatureMonitor(32)
    m.on_activation(_acts(f=32, t=50))
    top = m.get_top_features(k=5, metric=metric).features
    values = [getattr(r, metric if metric != "count" else "count") for r in top]
    assert values == sorted(values, reverse=True)
    allrows = m.get_statistics().features
    best = max(getattr(r, metric) for r in allrows)
    assert values[0] == best
    first_with_best = min(r.feature_idx for r in allrows if getattr(r, metric) == best)
    assert top[0].feature_idx == first_with_best


def test_top_features_ties_go_to_lower_index_and_unseen_last():
    m = FeatureMonitor(6, features=[5, 1, 3, 0])
    m.on_activation(torch.tensor([[1.0, 2.0, 0.0, 2.0, 0.0, 2.0]]))
    assert [r.feature_idx for r in m.get_top_features(4, "max").features] == [1, 3, 5, 0]
    with pytest.raises(ValueError, match="nope"):
        m.get_top_features(metric="nope")
    with pytest.raises(ValueError, match="k"):
        m.get_top_features(k=0)


def test_bad_activation_shape_raises_and_records_nothing():
    m = FeatureMonitor(16)
    with pytest.raises(ValueError, match=r"d_sae=16"):
        m.on_activation(torch.ones(3, 15))
    with pytest.raises(ValueError, match="mask"):
        m.on_activation(torch.ones(2, 3, 16), mask=torch.ones(3, 3))
    assert m.state.total_tokens == 0 and m.state.forward_passes == 0


def test_one_dim_leading_shape_and_half_precision():
    m = FeatureMonitor(16)
    m.on_activation(_acts(b=1).reshape(5, 16).to(torch.bfloat16))
    assert m.state.total_tokens == 5
    assert [r.token_position for r in m.get_history().records] == [4, 3, 2, 1, 0]


def test_concurrent_forward_and_configure_never_deadlock():
    m = FeatureMonitor(64, history_size=200)
    stop = threading.Event()
    errors: list[BaseException] = []

    def forward_loop():
        try:
            while not stop.is_set():
                m.on_activation(_acts(f=64, t=8))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=forward_loop) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(30):
        m.configure(history_size=50 + i, features=[i % 64], top_k=1 + i % 5)
        stats = m.get_statistics()
        counts = {r.count for r in stats.features}
        assert counts == {stats.total_activations}  # a consistent cut, never half an update
        m.get_history(limit=10)
        if i % 10 == 0:
            m.clear_history()
            m.reset_statistics()
    stop.set()
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    assert not errors


def test_for_sae_uses_width_and_attach_requires_sae():
    sae = SparseAutoencoder.from_tensors(torch.randn(8, 12), torch.zeros(12), torch.randn(12, 8),
                                         torch.zeros(8))
    m = FeatureMonitor.for_sae(sae)
    assert m.d_sae == 12 and m.state.sae_attached and not m.state.hook_attached
    with pytest.raises(ValueError, match="needs an SAE"):
        FeatureMonitor(12).attach(torch.nn.Linear(8, 8), "")


def test_encode_and_record_matches_on_activation():
    sae = SparseAutoencoder.from_tensors(torch.randn(8, 12), torch.zeros(12), torch.randn(12, 8),
                                         torch.zeros(8))
    x = torch.randn(3, 4, 8)
    a, b = FeatureMonitor.for_sae(sae), FeatureMonitor.for_sae(sae)
    a.encode_and_record(sae, x, "r")
    b.on_activation(sae.encode(x), request_id="r")
    assert a.get_statistics() .features == b.get_statistics().features


def test_repr_is_stable():
    assert repr(FeatureMonitor(4)) == repr(FeatureMonitor(4))
    assert "0x" not in repr(FeatureMonitor(4))


def test_snapshot_nan_values_are_json_safe():
    m = FeatureMonitor(4, features=[0])
    m.on_activation(torch.tensor([[float("nan"), 1.0, 0.0, 0.0]]))
    snap = m.snapshot()
    assert snap.records[0]["values"] == [[0, None]]
    assert snap.nbytes() > 0
    assert np.frombuffer(snap.table_features, "<i4").tolist() == [0]
    assert np.frombuffer(snap.table_columns["count"], "<f8").tolist() == [0.0]
    assert np.isnan(np.frombuffer(snap.table_columns["mean"], "<f8")[0])


def test_sparse_activation_equals_dense():
    gen = torch.Generator().manual_seed(3)
    values, indices = torch.topk(torch.rand(2, 6, 20, generator=gen), 4, dim=-1)
    dense = torch.zeros(2, 6, 20).scatter_(-1, indices, values)
    a = FeatureMonitor(20, features=[0, 5], selected=[5], top_k=6)
    b = FeatureMonitor(20, features=[0, 5], selected=[5], top_k=6)
    mask = torch.ones(2, 6)
    mask[1, :2] = 0
    a.on_activation(dense, request_id="r", mask=mask)
    b.on_sparse_activation(indices, values, request_id="r", mask=mask)
    for ra, rb in zip(a.get_statistics(list(range(20))).features,
                      b.get_statistics(list(range(20))).features, strict=True):
        assert (ra.count, ra.active_count, ra.min, ra.max, ra.nan_count) == \
            (rb.count, rb.active_count, rb.min, rb.max, rb.nan_count)
        assert ra.mean == pytest.approx(rb.mean, rel=1e-12, abs=1e-15)
        assert ra.std == pytest.approx(rb.std, rel=1e-9, abs=1e-15)
    ha, hb = a.get_history(limit=100).records, b.get_history(limit=100).records
    assert [r.activations for r in ha] == [r.activations for r in hb]
    assert [r.top_k for r in ha] == [r.top_k for r in hb]
    assert a.snapshot().value_counts == b.snapshot().value_counts
    with pytest.raises(ValueError, match="one shape"):
        b.on_sparse_activation(indices, values[..., :2])
    with pytest.raises(TypeError, match="integers"):
        b.on_sparse_activation(values, values)


def test_topk_sae_is_recorded_through_the_sparse_path():
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(8, 30, generator=gen)
    sae = SparseAutoencoder.from_tensors(w, torch.zeros(30), w.T.contiguous(), torch.zeros(8),
                                         architecture="topk", k=5)
    x = torch.randn(3, 7, 8, generator=gen)
    a, b = FeatureMonitor.for_sae(sae, compile=False), FeatureMonitor.for_sae(sae, compile=False)
    a.encode_and_record(sae, x, "r")
    b.on_activation(sae.encode(x), request_id="r")
    for ra, rb in zip(a.get_statistics().features, b.get_statistics().features, strict=True):
        assert (ra.count, ra.active_count, ra.min, ra.max) == \
            (rb.count, rb.active_count, rb.min, rb.max)
        assert ra.mean == pytest.approx(rb.mean, rel=1e-12, abs=1e-15)


def test_out_of_range_sparse_indices_are_ignored_and_counted_never_crash():
    m = FeatureMonitor(10)
    indices = torch.tensor([[1, 12], [-3, 2], [4, 5]])
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    m.on_sparse_activation(indices, values, mask=torch.tensor([[1, 1, 0]]))
    state = m.state
    assert state.dropped_indices == 2  # the padded row's indices are not counted
    assert state.total_tokens == 2
    rows = {r.feature_idx: r for r in m.get_statistics().features}
    assert (rows[1].count, rows[1].max, rows[2].max, rows[4].count) == (2, 1.0, 4.0, 2)
    assert m.snapshot().state.dropped_indices == 2


class _Tokenizer:
    def decode(self, ids):
        return "x" * 100 if ids[0] == 9 else f"t{ids[0]}"


def test_token_ids_are_recorded_and_named_when_read():
    m = FeatureMonitor(6, history_size=10)
    m.tokenizer = _Tokenizer()
    m.on_activation(torch.rand(2, 3, 6), request_id="r",
                    token_ids=torch.tensor([[1, 2, 3], [4, 5, 9]]))
    records = {(r.row, r.token_position): r for r in m.get_history().records}
    assert records[(0, 1)].token_id == 2 and records[(0, 1)].token == "t2"
    assert records[(1, 2)].token == "x" * 64  # token text is bounded
    m.tokenizer = None
    assert m.get_history().records[0].token is None
    m.on_activation(torch.rand(1, 6))  # tokens unknown
    assert m.get_history(limit=1).records[0].token_id is None


@pytest.mark.parametrize("token_ids, error", [
    ([[1, 2, 3]], TypeError),
    (torch.tensor([[1.0, 2.0, 3.0]]), TypeError),
    (torch.tensor([[1, 2]]), ValueError),
    (torch.tensor([[1, 2, 3, 4]]), ValueError),
])
def test_bad_token_ids_are_rejected_and_change_nothing(token_ids, error):
    m = FeatureMonitor(6)
    with pytest.raises(error, match="token_ids"):
        m.on_activation(torch.rand(1, 3, 6), token_ids=token_ids)
    assert m.state.total_tokens == 0 and m.state.forward_passes == 0


@pytest.mark.parametrize("native_on", [True, False], ids=["native", "torch"])
def test_a_feature_repeated_within_a_token_counts_once_and_the_repeat_is_dropped(native_on):
    """[[0, 0]], [[1., 2.]] is one value for feature 0 (it used to give active_ratio 2.0 and
    mean 3.0)."""
    monitor = FeatureMonitor(4, compile=False, native=native_on)
    monitor.on_sparse_activation(torch.tensor([[0, 0]]), torch.tensor([[1.0, 2.0]]))
    row = monitor.get_statistics(features=[0]).features[0]
    assert (row.count, row.active_count, row.active_ratio, row.mean) == (1, 1, 1.0, 1.0)
    assert monitor.state.dropped_indices == 1
    record = monitor.get_history(limit=1).records[0]
    assert [f for f, _ in record.top_k if f >= 0] == [0]


def test_an_sae_giving_the_wrong_rows_changes_nothing():
    """A refused batch merges nothing (its values used to be merged before the refusal)."""
    class WrongRows(torch.nn.Module):
        d_sae = 8

        def encode(self, x):
            return torch.ones(1, 8)

    monitor = FeatureMonitor(8, compile=False)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    monitor.attach(model, "0", WrongRows())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            model(torch.rand(2, 3, 4))
    state = monitor.state
    assert state.errors == 1 and "gave 1 rows of features" in state.last_error
    assert state.total_tokens == 0
    assert monitor.get_statistics(features=[0]).features[0].count == 0
    with pytest.raises(ValueError, match="gave 1 rows of features"):
        monitor.encode_and_record(WrongRows(), torch.rand(2, 3, 4), "r", None)
    assert monitor.get_statistics(features=[0]).features[0].count == 0


@pytest.mark.parametrize("shape", [(0, 8), (1, 0, 8), (0, 5, 8)])
def test_an_empty_batch_is_a_no_op(shape):
    """Empty batches record nothing and raise nothing (these raised IndexError)."""
    monitor = FeatureMonitor(8, compile=False)
    monitor.on_activation(torch.rand(4, 8))
    before = monitor.state
    monitor.on_activation(torch.rand(*shape))
    monitor.on_sparse_activation(torch.zeros(*shape[:-1], 2, dtype=torch.long),
                                 torch.zeros(*shape[:-1], 2))
    after = monitor.state
    assert (after.total_tokens, after.forward_passes, after.errors) == \
        (before.total_tokens, before.forward_passes, 0)
    with pytest.raises(ValueError):  # still checked: the wrong width is an error
        monitor.on_activation(torch.rand(0, 7))


def test_a_zero_token_forward_through_a_hook_keeps_monitoring():
    sae = SparseAutoencoder.from_tensors(torch.randn(4, 8), torch.zeros(8), torch.randn(8, 4),
                                         torch.zeros(4))
    monitor = FeatureMonitor.for_sae(sae, compile=False)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    monitor.attach(model, "0", sae)
    with torch.no_grad():
        model(torch.rand(1, 0, 4))
        model(torch.rand(1, 3, 4))
    assert monitor.state.errors == 0 and monitor.state.hook_attached
    assert monitor.state.total_tokens == 3


def test_a_failed_call_leaves_the_requests_positions_alone(monkeypatch):
    """A call that failed after positions were assigned used to move the
    request's positions on (an empty call reset them: next positions 1, 0)."""
    monitor = FeatureMonitor(8, compile=False, top_k=1)
    stats = monitor._recording.stats
    with monitor.request("r"):
        monitor.on_activation(torch.rand(4, 8))

        def broken(*args, **kwargs):
            raise RuntimeError("statistics failed")
        monkeypatch.setattr(stats, "update", broken)
        with pytest.raises(RuntimeError):
            monitor.on_activation(torch.rand(2, 8))
        monkeypatch.undo()
        monitor.on_activation(torch.rand(2, 8))
    positions = [r.token_position for r in monitor.get_history(limit=100).records]
    assert sorted(positions) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(("request_id", "error", "needle"), [
    (5, TypeError, "must be a string, got int"),
    ("", ValueError, "1..200 characters, got 0"),
    ("x" * 10_000, ValueError, "got 10000"),
])
def test_request_ids_are_checked_and_bounded(request_id, error, needle):
    """A 10,000-character id made a 519 KB snapshot; non-string
    ids were accepted. Refused when the block is asked for, and in every call taking one."""
    monitor = FeatureMonitor(8, compile=False)
    with pytest.raises(error, match=needle):
        monitor.request(request_id)
    with pytest.raises(error, match=needle):
        monitor.on_activation(torch.rand(2, 8), request_id=request_id)
    assert monitor.state.total_tokens == 0


@pytest.mark.parametrize(("positions", "error", "needle"), [
    ([0, 1], TypeError, "must be a torch.Tensor, got list"),
    (torch.arange(3), ValueError, r"one position per token \(2\)"),
    (torch.tensor([-1, 5]), ValueError, ">= 0, got -1"),
    (torch.tensor([0.5, 1.0]), TypeError, "integers"),
])
def test_bad_positions_are_refused_clearly(positions, error, needle):
    """A TypeError/ValueError naming the positions (was: AttributeError / RuntimeError, or
    silently accepted)."""
    monitor = FeatureMonitor(8, compile=False)
    with pytest.raises(error, match=needle):
        monitor.on_activation(torch.rand(2, 8), positions=positions)
    assert monitor.state.total_tokens == 0


def test_complex_features_are_refused():
    monitor = FeatureMonitor(8, compile=False)
    with pytest.raises(TypeError, match="real numbers"):
        monitor.on_activation(torch.rand(2, 8, dtype=torch.complex64))
    with pytest.raises(TypeError, match="real numbers"):
        monitor.on_sparse_activation(torch.zeros(2, 2, dtype=torch.long),
                                     torch.ones(2, 2, dtype=torch.complex64))
    assert monitor.state.total_tokens == 0


def test_meta_tensors_do_not_move_a_monitor_to_meta():
    """The first activation on `meta` moved the monitor there for good
    (get_statistics then raised NotImplementedError)."""
    monitor = FeatureMonitor(8, compile=False)
    with pytest.raises(ValueError, match="device='meta'"):
        monitor.on_activation(torch.empty(2, 8, device="meta"))
    monitor.on_activation(torch.ones(2, 8))
    assert monitor.get_statistics(features=[0]).features[0].count == 2


def test_subscribing_to_a_closed_monitor_is_an_error():
    """A RuntimeError (it used to return a subscription that never delivered)."""
    monitor = FeatureMonitor(8)
    monitor.close()
    with pytest.raises(RuntimeError, match="closed"):
        monitor.subscribe(lambda snapshot: None)


def test_a_closed_monitor_refuses_watches_and_listeners_registering_nothing():
    """`watch()` raised after registering the watch, and a second call was accepted silently
    (and `on_state_change` was accepted on a closed monitor)."""
    monitor = FeatureMonitor(8, compile=False)
    monitor.close()
    for _ in range(2):
        with pytest.raises(RuntimeError, match="closed"):
            monitor.watch(1)
        with pytest.raises(RuntimeError, match="closed"):
            monitor.on_state_change(lambda event, state: None)
        with pytest.raises(RuntimeError, match="closed"):
            monitor.subscribe(lambda snapshot: None)
    assert monitor._recording.watches == [] and monitor._live._listeners == []
    assert monitor.subscriptions == ()


def test_watch_then_close_then_watch_is_refused():
    monitor = FeatureMonitor(8, compile=False)
    first = monitor.watch(1)
    monitor.close()
    with pytest.raises(RuntimeError, match="closed"):
        monitor.watch(2)
    assert monitor._recording.watches == [first]


def test_a_wrong_width_input_leaves_the_compiled_path_on():
    """One wrong-d_in input switched our SAE's compiled path off for the
    rest of the process, with a warning blaming the compiler."""
    sae = SparseAutoencoder.from_tensors(torch.randn(4, 8), torch.zeros(8), torch.randn(8, 4),
                                         torch.zeros(4))
    monitor = FeatureMonitor.for_sae(sae, compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        with pytest.raises(ValueError, match=r"expects inputs \[\.\.\., 4\]"):
            monitor.encode_and_record(sae, torch.rand(3, 5), "r", None)
    assert monitor._ingest.fused.runner.active
    monitor.encode_and_record(sae, torch.rand(3, 4), "r", None)
    assert monitor.state.total_tokens == 3


def test_forwards_outside_a_request_keep_no_per_request_state():
    """Every forward outside `request()` gets a fresh auto-N id, and 4,096
    position tensors (and example contexts) were kept for ids that never come back. Named
    requests still continue."""
    monitor = FeatureMonitor(8, compile=False)
    for _ in range(50):
        monitor.on_activation(torch.rand(2, 3, 8))
    recording = monitor._recording
    assert len(recording.positions._next) == 0 and len(recording.examples._tails) == 0
    with monitor.request("chat"):
        monitor.on_activation(torch.rand(1, 3, 8))
        monitor.on_activation(torch.rand(1, 2, 8))
    assert list(recording.positions._next) == ["chat"]
    chat = [r.token_position for r in monitor.get_history(limit=5).records]
    assert sorted(chat) == [0, 1, 2, 3, 4]
