import numpy as np
import pytest
import torch

from featmon_widget import FeatureMonitor, SparseAutoencoder
from featmon_widget.snapshot.frequency import FREQUENCY_BIN_COUNT
from featmon_widget.snapshot.options import MAX_RECORDS, TABLE_COLUMNS
from featmon_widget.snapshot.schemas import SNAPSHOT_VERSION
from featmon_widget.snapshot.value_bins import DIST_BINS as VALUE_BIN_COUNT
from featmon_widget.snapshot.value_bins import NOMINAL_EDGES as VALUE_EDGES


def test_snapshot_is_bounded_for_the_widest_sae():
    d_sae = 131072
    m = FeatureMonitor(d_sae, features=list(range(256)), top_k=256, history_size=1000,
                       selected=list(range(8)))
    gen = torch.Generator().manual_seed(0)
    m.on_activation(torch.relu(torch.randn(64, d_sae, generator=gen) - 2))
    snap = m.snapshot(table_rows=200, records=MAX_RECORDS)
    assert snap.nbytes() <= 64 * 1024, snap.nbytes()
    assert snap.version == SNAPSHOT_VERSION


def test_snapshot_contents_match_the_monitor():
    m = FeatureMonitor(32, selected=[0, 3], top_k=4)
    gen = torch.Generator().manual_seed(1)
    acts = torch.relu(torch.randn(3, 10, 32, generator=gen))
    acts[..., 31] = 0  # never fires
    m.on_activation(acts)
    snap = m.snapshot(table_rows=5, metric="max")
    top = m.get_top_features(5, "max").features
    assert np.frombuffer(snap.table_features, "<i4").tolist() == [r.feature_idx for r in top]
    assert set(snap.table_columns) == set(TABLE_COLUMNS)
    np.testing.assert_array_equal(np.frombuffer(snap.table_columns["max"], "<f8"),
                                  [r.max for r in top])
    counts = np.frombuffer(snap.frequency_counts, "<i4")
    assert counts.shape == (FREQUENCY_BIN_COUNT,)
    assert counts.sum() + snap.never_fired + snap.never_seen == 32
    assert snap.never_fired == 1 and snap.never_seen == 0
    values = np.frombuffer(snap.value_counts, "<f8").reshape(2, VALUE_BIN_COUNT)
    assert values.sum(1).tolist() == [30, 30]
    f0 = acts[..., 0].flatten()
    assert values[0, 0] == int((f0 <= 0).sum())
    # Each positive value lands in the log bin whose edges enclose it.
    edges = VALUE_EDGES.numpy()
    v = float(f0[f0 > 0][0])
    b = int(np.searchsorted(edges[1:-1], v, side="right")) + 1
    assert values[0, b] >= 1
    assert len(snap.records) == 20
    assert snap.records[0]["position"] == 9
    msg = snap.to_message()
    assert isinstance(msg["table_features"], bytes)
    assert msg["state"]["total_tokens"] == 30


def test_selected_histograms_count_since_the_reset_not_the_selection():
    m = FeatureMonitor(8, selected=[1, 2])
    m.on_activation(torch.rand(5, 8))
    m.configure(selected=[2, 4])
    values = np.frombuffer(m.snapshot().value_counts, "<f8").reshape(2, VALUE_BIN_COUNT)
    assert values.sum(1).tolist() == [5, 5]


def test_snapshot_waits_for_its_copies_without_holding_the_monitor_lock(monkeypatch):
    """A forward must never queue behind a snapshot's host read."""
    import threading

    import featmon_widget.snapshot.build as snapshot_module

    m = FeatureMonitor(8)
    m.on_activation(torch.rand(3, 8))
    lock_free_during_wait = []
    real_start_copy = snapshot_module.start_copy

    def start_copy(tensors):
        wait = real_start_copy(tensors)

        def checked_wait():
            result: list[bool] = []

            def forward():
                m.on_activation(torch.rand(1, 8))
                result.append(True)

            probe = threading.Thread(target=forward, daemon=True)
            probe.start()
            probe.join(timeout=2)  # a forward that waits for the lock would not finish
            lock_free_during_wait.append(result == [True])
            return wait()

        return checked_wait

    monkeypatch.setattr(snapshot_module, "start_copy", start_copy)
    snap = m.snapshot()
    assert lock_free_during_wait == [True]
    assert snap.state.total_tokens == 3


def test_snapshot_is_not_changed_by_later_updates():
    m = FeatureMonitor(8, selected=[0])
    m.on_activation(torch.rand(3, 8))
    snap = m.snapshot()
    before = (snap.value_counts, snap.table_columns["count"], snap.state.total_tokens)
    m.on_activation(torch.rand(3, 8))
    assert (snap.value_counts, snap.table_columns["count"], snap.state.total_tokens) == before


class _LongTokens:
    def decode(self, ids):
        return "\u2603" * 100  # escapes to 6 bytes a character in JSON


def test_panels_show_the_selected_features_examples_as_get_examples_does():
    m = FeatureMonitor(6, selected=[1, 4])
    m.tokenizer = _LongTokens()
    m.set_labels({4: "four"})
    m.on_activation(torch.rand(2, 5, 6), request_id="r", token_ids=torch.arange(10).view(2, 5))
    panels = {p["feature"]: p for p in m.snapshot().feature_panels}
    assert list(panels) == [1, 4] and panels[4]["label"] == "four"
    for feature, panel in panels.items():
        want = m.get_examples(feature).examples
        assert [e["value"] for e in panel["examples"]] == pytest.approx(
            [e.value for e in want[:5]], rel=1e-8)
        for got, ref in zip(panel["examples"], want, strict=False):
            assert (got["request_id"], got["row"], got["position"], got["index"]) == (
                ref.request_id, ref.row, ref.position, ref.index)
            assert got["activations"] == pytest.approx(ref.activations, rel=1e-3)
            assert got["tokens"] == ["\u2603" * 15 + "…"] * len(ref.token_ids)
    stats = m.get_statistics([4]).features[0]
    assert panels[4]["count"] == stats.count
    assert panels[4]["max"] == pytest.approx(stats.max, rel=1e-8)


@pytest.mark.parametrize("labelled", [1, 2, 0])  # every feature, every other one, none
def test_worst_case_snapshot_with_panels_labels_and_tokens_stays_under_64_kb(labelled):
    d_sae = 4096
    m = FeatureMonitor(d_sae, features=list(range(256)), top_k=256, history_size=1000,
                       selected=list(range(8)))
    m.tokenizer = _LongTokens()
    # With an unembedding: every panel could say what its feature promotes, in long tokens too.
    g = torch.Generator().manual_seed(1)
    m.sae = SparseAutoencoder.from_tensors(torch.zeros(8, d_sae), torch.zeros(d_sae),
                                           torch.randn(d_sae, 8, generator=g), torch.zeros(8))
    m.set_unembedding(torch.randn(8, 200_000, generator=g))
    if labelled:  # unlabelled rows show top tokens, with the same long tokens
        m.set_labels({f: "\u2603" * 500 for f in range(0, d_sae, labelled)})
    gen = torch.Generator().manual_seed(0)
    m.on_activation(torch.relu(torch.randn(32, 40, d_sae, generator=gen)),
                    token_ids=torch.randint(0, 1000, (32, 40), generator=gen))
    snap = m.snapshot(table_rows=200, records=MAX_RECORDS)
    assert snap.nbytes() <= 64 * 1024, snap.nbytes()
    # Budget shared: with 16 three-byte characters in every token, most panels keep an example.
    assert len(snap.feature_panels) == 8
    assert sum(bool(panel["examples"]) for panel in snap.feature_panels) >= 6
    # And what each fires with, labels cut short, within its own budget.
    assert all(panel["fires_with"]["features"] for panel in snap.feature_panels)
    assert sum(len(p["fires_with"]["features"]) for p in snap.feature_panels) >= 24
    # The logits parts gave way where the whole was over 64 KB (never the examples).
    assert all("logits" not in p or len(p["logits"]["top"]) >= 3 for p in snap.feature_panels)


def test_panels_say_what_each_selected_feature_fires_with_as_get_cofiring_does():
    m = FeatureMonitor(64, selected=[3, 9])
    m.set_labels({f: f"label {f}" for f in range(0, 64, 2)})
    gen = torch.Generator().manual_seed(2)
    m.on_activation(torch.relu(torch.randn(6, 20, 64, generator=gen)))
    m.configure(selected=[3, 9, 20])
    m.on_activation(torch.relu(torch.randn(2, 20, 64, generator=gen)))
    for panel in m.snapshot().feature_panels:
        want = m.get_cofiring(panel["feature"], k=10)
        got = panel["fires_with"]
        assert (got["tokens"], got["active"]) == (want.tokens, want.active)
        assert [(f, both, active, label) for f, _, both, active, label in got["features"]] \
            == [(r.feature, r.both, r.active, r.label) for r in want.features]
        assert [r[1] for r in got["features"]] == pytest.approx(
            [r.jaccard for r in want.features], rel=1e-3)
    assert m.snapshot().feature_panels[2]["fires_with"]["tokens"] == 40


def test_fires_with_keeps_ten_rows_each_for_eight_features_without_labels():
    m = FeatureMonitor(256, selected=list(range(8)))
    m.on_activation(torch.relu(torch.randn(8, 30, 256, generator=torch.Generator().manual_seed(3))))
    assert [len(p["fires_with"]["features"]) for p in m.snapshot().feature_panels] == [10] * 8
    m.set_labels({f: f"feature {f} label" for f in range(256)})  # with labels: six or more
    assert min(len(p["fires_with"]["features"]) for p in m.snapshot().feature_panels) >= 6


def test_panels_keep_several_examples_for_ordinary_text():
    m = FeatureMonitor(64, selected=list(range(8)))
    m.tokenizer = type("T", (), {"decode": lambda self, ids: f" word{ids[0]}"})()
    m.set_labels({f: f"an ordinary label of feature {f}" for f in range(64)})
    gen = torch.Generator().manual_seed(1)
    m.on_activation(torch.relu(torch.randn(16, 20, 64, generator=gen)),
                    token_ids=torch.randint(0, 5000, (16, 20), generator=gen))
    # Eight panels share the budget: two or more examples each (more with fewer selected).
    assert all(len(panel["examples"]) >= 2 for panel in m.snapshot().feature_panels)
    m.configure(selected=[0, 1])
    assert all(len(panel["examples"]) == 5 for panel in m.snapshot().feature_panels)


def test_search_limits_the_table_to_the_index_and_labels_that_match():
    m = FeatureMonitor(300, features=list(range(0, 300, 2)))
    m.on_activation(torch.rand(4, 300))
    m.set_labels({12: "File paths", 40: "path separators", 41: "odd, not monitored", 7: "x"})

    def table(search):
        return np.frombuffer(m.snapshot(table_rows=200, search=search).table_features,
                             "<i4").tolist()

    assert sorted(table("PATH")) == [12, 40]  # label text, any case; ranked by the metric
    assert table("100") == [100]  # an index
    assert table("41") == []  # matches only a feature that is not monitored
    assert table("no such thing") == []
    assert len(table("")) == 150 and m.snapshot(search=" path ").table_search == "path"
    with pytest.raises(TypeError, match="search"):
        m.snapshot(search=5)
    with pytest.raises(ValueError, match="search"):
        m.snapshot(search="x" * 201)


def test_panels_show_the_sampled_activating_tokens_marked_as_such():
    m = FeatureMonitor(16, selected=[2, 5], samples_per_feature=2, context_window=2)
    m.on_activation(torch.rand(4, 6, 16), token_ids=torch.arange(24).view(4, 6))
    for panel in m.snapshot().feature_panels:
        want = m.get_examples(panel["feature"], kind="sample").examples
        assert [s["value"] for s in panel["samples"]] == pytest.approx(
            [e.value for e in want], rel=1e-8)
        assert all(s["sampled"] for s in panel["samples"])
        assert [s["position"] for s in panel["samples"]] == [e.position for e in want]
    m.configure(samples_per_feature=0)
    assert all("samples" not in p for p in m.snapshot().feature_panels)
