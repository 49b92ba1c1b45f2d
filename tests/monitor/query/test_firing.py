"""The firing summary a snapshot computes once (`monitor/firing.py`): the compiled CPU pass (where
the monitor's backend runs it) and the torch path (GPUs, no compiler, `native=False`) both equal
a float64 computation feature by feature, at bin edges too."""

import bisect
from functools import partial

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from featmon_widget.monitor.query.firing import firing_summary, firing_summary_torch
from featmon_widget.monitor.stats.backend import Backend
from featmon_widget.snapshot.frequency import (
    ACTIVE_SUM,
    FIRING_SUMMARY_SIZE,
    FREQUENCY_BIN_COUNT,
    FREQUENCY_THRESHOLDS,
    NEVER_FIRED,
    NEVER_SEEN,
    ULTRA_RARE,
)

NATIVE = Backend(native=True)
BOTH_PATHS = pytest.mark.parametrize(
    "summary", [partial(firing_summary, backend=NATIVE), firing_summary_torch],
    ids=["dispatch", "torch"])
THRESHOLDS = FREQUENCY_THRESHOLDS.tolist()


def reference(active: list[int], count: list[int], rare_floor: float) -> list[int]:
    """One feature at a time, in Python floats (IEEE float64 division, as the monitor's)."""
    out = [0] * FIRING_SUMMARY_SIZE
    for a, c in zip(active, count, strict=True):
        out[ACTIVE_SUM] += a
        if c == 0:
            out[NEVER_SEEN] += 1
        elif a == 0:
            out[NEVER_FIRED] += 1
        else:
            ratio = a / c
            out[bisect.bisect_right(THRESHOLDS, ratio)] += 1  # thresholds at or below it
            out[ULTRA_RARE] += ratio < rare_floor
    return out


def test_the_compiled_pass_is_what_the_cpu_uses():
    counts = torch.zeros(10, dtype=torch.int64)
    assert NATIVE.firing_summary(counts, counts) is not None
    assert NATIVE.firing_summary(counts[::2], counts[::2]) is None  # a view: torch
    assert Backend(native=False).firing_summary(counts, counts) is None


@BOTH_PATHS
def test_a_hand_made_example(summary):
    count = torch.tensor([100, 100, 100, 0, 100, 10**7])
    active = torch.tensor([100, 1, 0, 0, 10, 3])
    got = summary(active, count, 1e-5).tolist()
    assert got[NEVER_FIRED] == 1 and got[NEVER_SEEN] == 1 and got[ACTIVE_SUM] == 114
    assert got[ULTRA_RARE] == 1  # 3 in ten million
    assert sum(got[:FREQUENCY_BIN_COUNT]) == 4
    # 1.0 is in the last bin, 0.1 and 0.01 start theirs (log10 -1 and -2 are edges).
    assert got[FREQUENCY_BIN_COUNT - 1] == 1 and got[28] == 1 and got[24] == 1
    assert got == reference(active.tolist(), count.tolist(), 1e-5)


def _near_thresholds() -> st.SearchStrategy[tuple[int, int]]:
    """(active, count) pairs whose ratio is one count either side of a bin edge."""
    def pair(j: int, scale: int, step: int) -> tuple[int, int]:
        count = scale
        active = min(count, max(0, round(THRESHOLDS[j] * count) + step))
        return active, count
    scales = [10**k for k in range(1, 13)] + [3 * 7**k for k in range(5, 15)]
    return st.builds(pair, st.integers(0, FREQUENCY_BIN_COUNT - 2), st.sampled_from(scales),
                     st.integers(-1, 1))


@BOTH_PATHS
@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_near_thresholds(),
                          st.tuples(st.integers(0, 50), st.integers(0, 50)).map(
                              lambda p: (min(p), max(p))),
                          st.integers(1, 2**40).map(lambda c: (1, c))),
                min_size=1, max_size=3000),
       st.sampled_from([1e-5, 1e-3, 0.5]))
def test_equals_a_float64_computation(summary, pairs, rare_floor):
    active = [a for a, _ in pairs]
    count = [c for _, c in pairs]
    got = summary(torch.tensor(active), torch.tensor(count), rare_floor)
    assert got.dtype == torch.int64
    assert got.tolist() == reference(active, count, rare_floor)


def test_both_paths_agree_at_a_million_features():
    g = torch.Generator().manual_seed(0)
    n = 1 << 20
    count = torch.randint(0, 10**9, (n,), generator=g)
    count[torch.rand(n, generator=g) < 0.1] = 0
    active = (count.double() * torch.rand(n, generator=g) ** 8).to(torch.int64)
    for rare_floor in (1e-5, 1e-2):
        fast = firing_summary(active, count, rare_floor, NATIVE)
        assert torch.equal(fast, firing_summary_torch(active, count, rare_floor))
    assert int(fast[NEVER_SEEN]) == int((count == 0).sum())


def test_views_and_empty_inputs():
    count = torch.arange(20) * 3
    active = torch.arange(20)
    for a, c in ((active[::2], count[::2]), (active[:0], count[:0])):
        got = firing_summary(a, c, 1e-5, NATIVE).tolist()
        assert got == reference(a.tolist(), c.tolist(), 1e-5)
