import torch

from featmon_widget.monitor.stats import pending
from featmon_widget.monitor.stats.kernels import StatisticsKernels
from featmon_widget.monitor.stats.native import sparse_accumulator
from featmon_widget.monitor.stats.pending import PendingSparse
from featmon_widget.monitor.stats.running import RunningStats


def _table(f: int = 3) -> PendingSparse:
    return PendingSparse(f, sparse_accumulator())


def test_new_table_is_empty_and_clear_empties_it():
    t = _table()
    assert t.rows_held == 0 and t.rows.item() == 0
    t.start(torch.zeros(3, dtype=torch.float64), 0.0)
    t.add(torch.tensor([[0, 2]]), torch.tensor([[1.0, -2.0]]), torch.ones(1, dtype=torch.bool))
    assert t.rows_held == 1 and t.table[0, pending.STORED] == 1
    t.clear()
    assert t.rows_held == 0 and t.rows.item() == 0
    assert torch.equal(t.table[:, : pending.MIN], torch.zeros(5, pending.MIN, dtype=torch.float64))
    assert torch.isinf(t.table[:, pending.MIN]).all() and (t.table[:, pending.MIN] > 0).all()
    assert (t.table[:, pending.MAX] < 0).all()


def test_must_merge_before_a_new_threshold_or_too_many_rows(monkeypatch):
    monkeypatch.setattr(pending, "FLUSH_ROWS", 10)
    t = _table()
    assert not t.must_merge_before(100, 0.5)  # empty: nothing to merge
    t.start(torch.zeros(3, dtype=torch.float64), 0.5)
    t.add(torch.zeros(4, 1, dtype=torch.int64), torch.ones(4, 1), torch.ones(4, dtype=torch.bool))
    assert not t.must_merge_before(6, 0.5)
    assert t.must_merge_before(7, 0.5)
    assert t.must_merge_before(1, 0.25)


def test_negative_threshold_makes_implicit_zeros_active():
    """A feature absent from a token is 0 there, and 0 > -0.5 is active."""
    stats = RunningStats(3, torch.device("cpu"), StatisticsKernels(compile=False), native=True)
    stats.update_sparse(torch.tensor([[0], [1]]), torch.tensor([[1.0], [-1.0]]),
                        torch.ones(2, dtype=torch.bool), -0.5)
    assert stats.active_count.tolist() == [2, 1, 2]
    assert stats.min.tolist() == [0.0, -1.0, 0.0] and stats.max.tolist() == [1.0, 0.0, 0.0]
