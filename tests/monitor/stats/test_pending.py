import torch

from featmon_widget.monitor.stats import pending
from featmon_widget.monitor.stats.backend import Backend
from featmon_widget.monitor.stats.kernels import StatisticsKernels
from featmon_widget.monitor.stats.pending import PendingSparse
from featmon_widget.monitor.stats.running import RunningStats


def _table(f: int = 3) -> PendingSparse:
    return PendingSparse(f, Backend(native=True).kernel("sparse"))


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
    stats = RunningStats(3, torch.device("cpu"), StatisticsKernels(compile=False, native=True))
    stats.update_sparse(torch.tensor([[0], [1]]), torch.tensor([[1.0], [-1.0]]),
                        torch.ones(2, dtype=torch.bool), -0.5)
    assert stats.active_count.tolist() == [2, 1, 2]
    assert stats.min.tolist() == [0.0, -1.0, 0.0] and stats.max.tolist() == [1.0, 0.0, 0.0]


def test_the_native_table_merge_is_bit_for_bit_the_torch_merge():
    """The C merge (`PendingSparse.merge_into`, one pass that also empties the table) against
    `merge_table` + `clear`: the same totals to the last bit, shifts, NaN, out-of-range indices
    and a negative threshold included."""
    from featmon_widget.monitor.stats.moments import Totals, empty_totals
    from featmon_widget.monitor.stats.pending import PendingSparse, merge_table

    accumulate = Backend(native=True).kernel("sparse")
    assert accumulate is not None
    g = torch.Generator().manual_seed(0)

    def bits(t: torch.Tensor) -> torch.Tensor:
        return t.view(torch.int64) if t.is_floating_point() else t

    for trial in range(12):
        f, threshold = 1 + 37 * trial, [0.0, -0.5, 0.3][trial % 3]
        torch_side, native_side = PendingSparse(f, accumulate), PendingSparse(f, accumulate)
        totals_a = empty_totals(f, torch.device("cpu"))
        totals_b = Totals(*(t.clone() for t in totals_a))
        for step in range(3):
            shift = torch.randn(f, generator=g, dtype=torch.float64) * step
            indices = torch.randint(-2, f + 3, (50, 6), generator=g)
            values = torch.randn(50, 6, generator=g)
            values[0, 0] = float("nan")
            valid = torch.rand(50, generator=g) > 0.2
            for table in (torch_side, native_side):
                table.start(shift, threshold)
                table.add(indices, values, valid)
            dropped = merge_table(totals_a, torch_side.table, torch_side.rows,
                                  torch_side.shift, threshold < 0)
            torch_side.clear()
            assert int(native_side.merge_into(totals_b)) == int(dropped)
            for a, b in zip(totals_a, totals_b, strict=True):
                assert torch.equal(bits(a), bits(b)), (trial, step)
            assert torch.equal(torch_side.table, native_side.table)
