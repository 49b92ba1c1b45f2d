"""The read operations (`query.queries`): ranking among all features or candidates, statistics
rows with undefined values as None, history records newest first with their filters, and a
feature's kept examples with the unknown tokens left out."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from reference import reference_stats

from featmon_widget.monitor.query.queries import (
    feature_examples,
    history_records,
    rank,
    statistics_rows,
)
from featmon_widget.monitor.record.examples import ExampleRows
from featmon_widget.monitor.stats.running import RunningStats
from featmon_widget.snapshot.records import HistoryRows

NAN = float("nan")


def _stats(values: torch.Tensor) -> RunningStats:
    stats = RunningStats(values.shape[1], torch.device("cpu"))
    stats.update(values, None, 0.0)
    return stats


# ---- rank ----------------------------------------------------------------------------------------


def test_rank_orders_every_feature_by_the_metric_ties_to_the_lower_index():
    stats = _stats(torch.tensor([[1.0, 3.0, 3.0, 0.5, 2.0]]))
    assert rank(stats, None, "max", 5).tolist() == [1, 2, 4, 0, 3]
    assert rank(stats, None, "max", 2).tolist() == [1, 2]


def test_rank_among_candidates_keeps_only_them_in_metric_order():
    stats = _stats(torch.tensor([[1.0, 3.0, 3.0, 0.5, 2.0]]))
    candidates = torch.tensor([4, 0, 2])  # any order: ties still go to the lower index
    assert rank(stats, candidates, "max", 3).tolist() == [2, 4, 0]
    assert rank(stats, candidates, "max", 1).tolist() == [2]


def test_undefined_metrics_rank_last():
    stats = _stats(torch.tensor([[NAN, 1.0, NAN], [NAN, 2.0, 5.0]]))  # feature 0 never seen
    assert rank(stats, None, "mean", 3).tolist() == [2, 1, 0]
    assert rank(stats, torch.tensor([0, 1]), "mean", 2).tolist() == [1, 0]


# ---- statistics rows -----------------------------------------------------------------------------


def test_statistics_rows_equal_float64_in_the_order_asked_with_labels():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(50, 6, generator=g)
    values[3, 2] = NAN
    stats = _stats(values)
    rows = statistics_rows(stats, torch.tensor([5, 2, 0]), {2: "two", 9: "elsewhere"})
    ref = reference_stats(values.double().numpy())
    assert [r.feature_idx for r in rows] == [5, 2, 0]
    assert [r.label for r in rows] == [None, "two", None]
    for r in rows:
        f = r.feature_idx
        assert (r.count, r.active_count, r.nan_count) == (
            ref["count"][f], ref["active_count"][f], ref["nan_count"][f])
        assert r.active_ratio == pytest.approx(ref["active_count"][f] / ref["count"][f])
        assert r.mean == pytest.approx(ref["mean"][f], rel=1e-12)
        assert r.std == pytest.approx(ref["std"][f], rel=1e-9)
        assert r.mean_active == pytest.approx(ref["mean_active"][f], rel=1e-12)
        assert (r.min, r.max) == (ref["min"][f], ref["max"][f])


def test_a_feature_with_no_values_has_none_for_every_undefined_statistic():
    stats = _stats(torch.tensor([[NAN, -1.0], [NAN, -2.0]]))
    never, inactive = statistics_rows(stats, torch.tensor([0, 1]), {})
    assert (never.count, never.nan_count, never.active_count) == (0, 2, 0)
    assert never.mean is never.std is never.min is never.max is never.mean_active is None
    assert never.active_ratio is None
    assert inactive.active_ratio == 0.0 and inactive.mean_active is None
    assert inactive.mean == -1.5 and inactive.min == -2.0


# ---- history records ---------------------------------------------------------------------------


def _history() -> HistoryRows:
    """Three records, oldest first: two of request "a" (rows 0 and 1), one of "b"."""
    return HistoryRows(
        top_idx=[[3, 1, -1], [2, -1, -1], [0, 4, 1]],
        top_val=[[0.9, 0.2, 0.0], [0.5, 0.0, 0.0], [0.7, 0.05, -1.0]],
        values=[[0.2, 0.0], [0.0, 0.5], [0.0, 0.0]],
        request_ids=["a", "a", "b"], rows=[0, 1, 0], positions=[4, 2, 0],
        timestamps=[1.0, 2.0, 3.0], token_ids=[17, -1, 5],
    )


def _text(token_id: int) -> str | None:
    return None if token_id < 0 else f"<{token_id}>"


def test_history_records_come_newest_first_with_everything_a_record_holds():
    records = history_records(_history(), (1, 2), 0.1, None, _text)
    assert [(r.request_id, r.row, r.token_position) for r in records] == [
        ("b", 0, 0), ("a", 1, 2), ("a", 0, 4)]
    newest, middle, oldest = records
    assert newest.top_k == [(0, 0.7)]  # above the threshold only, strongest first
    assert oldest.top_k == [(3, 0.9), (1, 0.2)]  # the padding slot (-1) left out
    assert oldest.activations == {1: 0.2, 2: 0.0}
    assert (oldest.token_id, oldest.token, oldest.timestamp) == (17, "<17>", 1.0)
    assert (middle.token_id, middle.token) == (None, None)  # the token was not known


def test_history_records_filter_by_request_or_by_request_and_row():
    rows = _history()
    assert [r.row for r in history_records(rows, (1, 2), 0.0, "a", _text)] == [1, 0]
    assert [r.token_position for r in history_records(rows, (1, 2), 0.0, "a/0", _text)] == [4]
    assert history_records(rows, (1, 2), 0.0, "a/7", _text) == []
    assert history_records(rows, (1, 2), 0.0, "c", _text) == []


# ---- examples ------------------------------------------------------------------------------------


def _table(rows: ExampleRows, window: int = 2) -> SimpleNamespace:
    """What `feature_examples` reads of an `ExampleTable`."""
    names = {0: "req-a", 1: "req-b"}
    return SimpleNamespace(read=lambda feature, k: rows, window=window,
                           request_name=names.__getitem__)


def test_examples_leave_unknown_tokens_out_and_name_their_requests():
    rows = ExampleRows(values=[3.0, 1.5], requests=[1, 0], rows=[0, 2], positions=[7, 1],
                       windows=[[-1, 10, 11, 12, -1], [-1, -1, 20, 21, 22]],
                       window_acts=[[NAN, 0.5, 3.0, NAN, NAN], [NAN, NAN, 1.5, 0.0, 0.25]])
    best, other = feature_examples(_table(rows), 4, 2, _text)
    assert (best.value, best.request_id, best.row, best.position) == (3.0, "req-b", 0, 7)
    assert best.token_ids == [10, 11, 12] and best.index == 1
    assert best.activations == [0.5, 3.0, None]  # not kept for an earlier forward's token
    assert best.tokens == ["<10>", "<11>", "<12>"]
    assert other.token_ids == [20, 21, 22] and other.index == 0
    assert other.activations == [1.5, 0.0, 0.25]


def test_an_example_whose_token_is_unknown_has_index_minus_one_and_no_text():
    rows = ExampleRows(values=[2.0], requests=[0], rows=[0], positions=[0],
                       windows=[[-1, -1, -1, 8, 9]], window_acts=[[NAN, NAN, 2.0, 1.0, 0.0]])
    (example,) = feature_examples(_table(rows), 0, 1, lambda t: None)
    assert example.token_ids == [8, 9] and example.index == -1
    assert example.tokens is None  # no tokenizer
    assert example.activations == [1.0, 0.0]
    assert all(not (isinstance(a, float) and math.isnan(a)) for a in example.activations)


def test_no_examples_kept_gives_an_empty_list():
    rows = ExampleRows([], [], [], [], [], [])
    assert feature_examples(_table(rows), 3, 5, _text) == []


def test_statistics_rows_read_the_features_given_not_their_neighbours():
    stats = _stats(torch.arange(12.0).reshape(3, 4))
    (row,) = statistics_rows(stats, torch.tensor([3]), {})
    assert (row.feature_idx, row.min, row.max, row.mean) == (3, 3.0, 11.0, 7.0)
    assert row.std == pytest.approx(np.std([3.0, 7.0, 11.0], ddof=1))


def test_a_history_filter_names_one_request_or_one_row_of_it_never_both():
    from featmon_widget import FeatureMonitor

    m = FeatureMonitor(6, compile=False)
    m.on_activation(torch.rand(2, 3, 6), request_id="a")
    m.on_activation(torch.rand(1, 2, 6), request_id="a/b")
    with pytest.raises(ValueError, match="names a row"):  # would read as request "a", row 0
        m.on_activation(torch.rand(1, 2, 6), request_id="a/0")
    with pytest.raises(ValueError, match="names a row"), m.request("x/12"):
        pass
    assert m.state.total_tokens == 8  # the refused forward recorded nothing
    assert m.get_history(limit=100, request_id="a").total == 6
    assert m.get_history(limit=100, request_id="a/0").total == 3
    assert m.get_history(limit=100, request_id="a", row=1).total == 3
    assert {r.row for r in m.get_history(limit=100, request_id="a/1").records} == {1}
    assert m.get_history(limit=100, request_id="a/b").total == 2  # not a row: the request
    with pytest.raises(ValueError, match="needs a request_id"):
        m.get_history(row=0)
    with pytest.raises(ValueError, match="row"):
        m.get_history(request_id="a", row=-1)
