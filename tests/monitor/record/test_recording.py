"""`Recording`, everything one monitor has recorded: positions per request, the totals a pass
adds, reconfiguration (history resized keeping the newest, threshold statistics restarted),
resets, and the totals and slices the snapshot builder reads."""

import pytest
import torch

from featmon_widget.monitor.config import MonitorConfig
from featmon_widget.monitor.record.ingest import Ingest
from featmon_widget.monitor.record.recording import Recording, RemoteView
from featmon_widget.monitor.stats.fused import FusedEncoder
from featmon_widget.monitor.stats.kernels import StatisticsKernels

D = 6


def recording(device=None, **config) -> tuple[Recording, Ingest]:
    """A recording of width D with `config`, and the ingest that feeds it."""
    kernels = StatisticsKernels(compile=False)
    rec = Recording(D, MonitorConfig().replace(D, top_k=3, **config), device, kernels)
    return rec, Ingest(rec, FusedEncoder(kernels))


def test_an_empty_recording_holds_nothing():
    rec, _ = recording(history_size=5)
    totals = rec.device_totals()
    assert [int(t) for t in totals] == [0, 0, 0, 0]
    assert rec.forward_passes == rec.total_forward_passes == 0
    assert rec.device == torch.device("cpu")


def test_positions_continue_per_request_and_padding_is_not_valid():
    rec, _ = recording()
    pos, valid = rec.positions_for("a", 2, 3, None, None)
    assert pos.tolist() == [0, 1, 2, 0, 1, 2] and valid.all()
    pos, valid = rec.positions_for("a", 2, 2, None, torch.tensor([[1, 1], [0, 1]]))
    assert valid.tolist() == [True, True, False, True]
    assert [p for p, v in zip(pos.tolist(), valid.tolist(), strict=True) if v] == [3, 4, 3]
    pos, _ = rec.positions_for("b", 1, 2, None, None)  # another request starts at 0
    assert pos.tolist() == [0, 1]


def test_explicit_positions_override_the_automatic_ones():
    rec, _ = recording()
    pos, valid = rec.positions_for("a", 1, 3, torch.tensor([[7, 8, 9]]), None)
    assert pos.tolist() == [7, 8, 9] and valid.all()
    pos, _ = rec.positions_for("a", 1, 1, None, None)
    assert pos.tolist() == [0]  # explicit positions do not move the request's own


@pytest.mark.parametrize(("request_id", "error"), [(3, TypeError), ("", ValueError)])
def test_a_bad_request_id_is_refused_before_positions_move(request_id, error):
    rec, _ = recording()
    with pytest.raises(error, match="request_id"):
        rec.positions_for(request_id, 1, 2, None, None)


def test_a_recorded_pass_adds_its_real_tokens_and_one_forward():
    rec, ingest = recording(history_size=50)
    ingest.dense(torch.rand(2, 3, D), "a", None, torch.tensor([[1, 1, 1], [0, 1, 1]]))
    ingest.dense(torch.rand(4, D), "b", None, None)
    totals = rec.device_totals()
    assert int(totals.tokens) == 5 + 4
    assert int(totals.history_count) == 9
    assert rec.forward_passes == 2
    assert int(rec.active_tokens) == 9


def test_meta_tensors_are_refused_unless_the_recording_is_on_meta():
    rec, _ = recording()
    with pytest.raises(ValueError, match="meta tensors have no values"):
        rec.adopt_device(torch.device("meta"))
    assert rec.device == torch.device("cpu")


def test_an_explicit_device_is_kept():
    rec, _ = recording(device=torch.device("cpu"))
    assert rec.device_fixed
    rec.adopt_device(torch.device("cpu"))
    assert rec.device == torch.device("cpu")


def test_a_smaller_history_keeps_the_newest_records():
    rec, ingest = recording(history_size=10, features=(0, 1))
    for i in range(3):
        ingest.dense(torch.full((1, 2, D), float(i)), f"r{i}", None, None)
    rec.reconfigure(rec.config.replace(D, history_size=3))
    tail = rec.history_tail(3)
    assert int(tail.held) == 3
    values = tail.columns[2][-3:].tolist()  # the monitored features' values, oldest first
    assert values == [[1.0, 1.0], [2.0, 2.0], [2.0, 2.0]]
    assert int(rec.device_totals().history_count) == 3


def test_a_threshold_change_restarts_the_threshold_statistics_only():
    rec, ingest = recording(selected=(1,))
    ingest.dense(torch.full((4, D), 0.5), "a", None, None)
    before = rec.since
    rec.reconfigure(rec.config.replace(D, threshold=0.25))
    assert int(rec.active_tokens) == 0
    assert rec.stats.active_count.sum().item() == 0
    assert rec.stats.count.tolist() == [4] * D  # the statistics themselves stay
    assert int(rec.device_totals().tokens) == 4
    assert rec.since == before and rec.active_since >= before
    assert int(rec.distributions.counts.sum()) == 0  # distributions count from the new threshold


def test_a_new_selection_keeps_every_distribution():
    rec, ingest = recording(selected=(1, 2))
    ingest.dense(torch.full((3, D), 0.5), "a", None, None)
    kept = rec.distributions.counts.clone()
    rec.reconfigure(rec.config.replace(D, selected=(1, 4)))
    assert torch.equal(rec.distributions.counts, kept)
    assert rec.value_histograms().counts.sum(1).tolist() == [3, 3]


def test_reset_statistics_zeroes_the_totals_and_keeps_the_history():
    rec, ingest = recording(history_size=20)
    ingest.dense(torch.rand(5, D), "a", None, None)
    rec.remote = RemoteView(tokens=7, dropped_indices=0, forward_passes=1, ranks=2,
                            synced_at=0.0, active_tokens=7)
    rec.reset_statistics()
    assert int(rec.tokens) == 0 and rec.forward_passes == 0
    assert rec.remote is None
    assert rec.stats.count.sum().item() == 0
    assert int(rec.device_totals().history_count) == 5


def test_clear_history_counts_the_records_and_restarts_positions():
    rec, ingest = recording(history_size=20)
    ingest.dense(torch.rand(3, D), "a", None, None)
    assert rec.clear_history() == 3
    assert int(rec.device_totals().history_count) == 0
    pos, _ = rec.positions_for("a", 1, 2, None, None)
    assert pos.tolist() == [0, 1]
    assert int(rec.tokens) == 3  # the statistics are not the history


def test_totals_include_the_other_ranks_as_of_the_last_sync():
    rec, ingest = recording()
    ingest.dense(torch.rand(2, D), "a", None, None)
    rec.remote = RemoteView(tokens=10, dropped_indices=3, forward_passes=4, ranks=3,
                            synced_at=1.0, active_tokens=6)
    totals = rec.device_totals()
    assert int(totals.tokens) == 12 and int(totals.dropped_indices) == 3
    assert rec.total_forward_passes == 5 and rec.forward_passes == 1
    assert int(rec.seen_active_tokens()) == 8 and int(rec.active_tokens) == 2


def test_ranking_is_among_the_monitored_features():
    rec, ingest = recording(features=(1, 3, 4))
    ingest.dense(torch.tensor([[0.0, 1.0, 9.0, 2.0, 3.0, 8.0]]), "a", None, None)
    assert rec.ranked("max", 3).tolist() == [4, 3, 1]  # 2 and 5 are not monitored
    assert rec.ranked("max", 3, among=[1, 2, 3]).tolist() == [3, 1]
    assert rec.feature_index(None).tolist() == [1, 3, 4]
    assert rec.feature_index([5, 0]).tolist() == [5, 0]
    with pytest.raises(ValueError, match="0..5"):
        rec.feature_index([6])


def test_examples_of_gives_the_best_kept_examples_of_each_feature():
    rec, ingest = recording(examples_per_feature=4, context_window=1)
    for i, v in enumerate((0.5, 2.0, 1.0)):
        ingest.dense(torch.full((1, D), v), f"r{i}", None, None)
    slices = rec.examples_of((0, 5), 2)
    value = slices.columns[0]
    assert slices.features == (0, 5) and slices.window == 1
    assert value.tolist() == [[2.0, 1.0], [2.0, 1.0]]  # best first
    assert slices.request_name(int(slices.columns[1][0, 0])) == "r1"


def test_device_bytes_names_every_part():
    rec, ingest = recording()
    ingest.dense(torch.rand(2, D), "a", None, None)
    parts = rec.device_bytes()
    assert {"statistics", "history", "distributions", "examples", "health"} <= set(parts)
    assert all(isinstance(n, int) and n >= 0 for n in parts.values())
    assert parts["statistics"] > 0
