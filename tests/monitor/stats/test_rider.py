"""The history rows' top-k riding on the dense statistics pass (`RowTops`): where the pass says
it ranked the rows, each is exactly the separate top-k kernel's (row_topk.c) result; where it
cannot (a row with fewer than k counted values, a NaN or an Inf), it says so."""

import pytest
import torch
from conftest import native_kernel

from featmon_widget import FeatureMonitor
from featmon_widget.monitor.stats import native
from featmon_widget.monitor.stats.rider import RowTops, StatisticsRider

F = 2 * 4096 + 100  # five tiles: rows ranked across threads and a partial tile


def _acts(dtype: torch.dtype, n: int = 40, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # Few distinct values: ties between features are common (the lower feature ranks first).
    x = torch.relu(torch.randint(-12, 5, (n, F), generator=gen).float() * 0.25)
    return x.to(dtype)


def _tops(pick: list[int], k: int) -> RowTops:
    return RowTops(torch.tensor(pick, dtype=torch.int64), k, ())


def _ranked(acts: torch.Tensor, tops: RowTops, threshold: float = 0.0) -> bool:
    shift = torch.zeros(acts.shape[1], dtype=torch.float64)
    native_kernel("dense")(acts, None, shift, threshold, StatisticsRider(None, tops=tops))
    return tops.ranked


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("k", [1, 7, 40])
def test_ranked_rows_equal_the_separate_top_k(monkeypatch, dtype, threads, k):
    monkeypatch.setattr(native, "_THREADED_STATISTICS", 0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    acts = _acts(dtype)
    pick = [39, 0, 17, -1, 17, 5]  # a filler (-1) and a row picked twice
    tops = _tops(pick, k)
    assert _ranked(acts, tops)
    real = torch.tensor([p for p in pick if p >= 0])
    want_idx, want_val = native_kernel("row_topk")(acts, real, k)
    rows = [i for i, p in enumerate(pick) if p >= 0]
    assert torch.equal(tops.idx[rows], want_idx) and torch.equal(tops.val[rows], want_val)
    assert tops.idx[3].tolist() == [-1] * k and tops.val[3].isnan().all()


def test_ties_across_threads_keep_the_lower_feature_whichever_thread_took_its_tile(
        monkeypatch):
    """Threads take tiles as they finish others, so a lower tile may sit in any thread's
    list: rows of one repeated value rank features 0..k-1 every time."""
    monkeypatch.setattr(native, "_THREADED_STATISTICS", 0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    acts = torch.full((6, F), 0.5)
    acts[1, :4096] = 0.25  # the ties in the last three tiles only
    for _ in range(40):
        tops = _tops([0, 1], 5)
        assert _ranked(acts, tops)
        assert tops.idx.tolist() == [[0, 1, 2, 3, 4], [4096, 4097, 4098, 4099, 4100]]


def test_negative_thresholds_rank_the_negative_values_too():
    acts = _acts(torch.float32) - 1.0  # most values negative, all above -2
    tops = _tops([0, 1, 2], 50)
    assert _ranked(acts, tops, threshold=-2.0)
    want_idx, want_val = native_kernel("row_topk")(acts, torch.tensor([0, 1, 2]), 50)
    assert torch.equal(tops.idx, want_idx) and torch.equal(tops.val, want_val)


def test_a_row_with_fewer_counted_values_than_k_is_left_to_the_caller():
    acts = _acts(torch.float32)
    acts[3] = 0.0
    acts[3, [10, 5000]] = 1.0  # two counted values, k = 3
    assert not _ranked(acts, _tops([1, 3], 3))
    assert _ranked(acts, _tops([1, 2], 3))  # the same forward, rows with enough


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_forward_holding_a_nan_or_an_inf_is_left_to_the_caller(bad):
    acts = _acts(torch.bfloat16)
    acts[30, 6000] = bad  # not even a picked row: NaN / Inf rank above the numbers
    assert not _ranked(acts, _tops([0, 1], 5))


def test_float16_and_rows_outside_the_forward_are_not_ranked_by_the_pass():
    assert not _ranked(_acts(torch.float16), _tops([0], 3))
    tops = _tops([0, 40], 3)  # row 40 is past the forward's 40 rows: a filler
    assert _ranked(_acts(torch.float32), tops)
    assert tops.idx[1].tolist() == [-1] * 3


def test_the_history_takes_the_pass_top_k_and_ranks_itself_where_the_pass_cannot(monkeypatch):
    calls = []
    real = native.RowTopK.__call__
    monkeypatch.setattr(native.RowTopK, "__call__",
                        lambda self, *a: calls.append(1) or real(self, *a))
    riding = FeatureMonitor(F, compile=False, native=True, top_k=5, history_size=60)
    separate = FeatureMonitor(F, compile=False, native=True, top_k=5, history_size=60)
    separate._recording.history.row_tops = lambda valid: None  # the separate kernel alone
    acts = _acts(torch.float32, n=48)
    odd = acts.clone()
    odd[7, 9] = float("nan")
    mask = torch.ones(2, 24)
    mask[0, :5] = 0  # padding: the history's fillers
    for name, x, ranked_by_the_pass in (("r", acts, True), ("s", odd, False)):
        calls.clear()
        riding.on_activation(x.view(2, 24, F), request_id=name, mask=mask)
        assert calls == ([] if ranked_by_the_pass else [1])
        separate.on_activation(x.view(2, 24, F), request_id=name, mask=mask)
    got, want = riding.get_history(limit=60).records, separate.get_history(limit=60).records
    assert len(got) == 60 and {r.request_id for r in got} == {"r", "s"}
    assert [(r.request_id, r.row, r.token_position, r.top_k) for r in got] == \
        [(r.request_id, r.row, r.token_position, r.top_k) for r in want]
