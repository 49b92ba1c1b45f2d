"""The compiled whole-feature scans (`stats/scans.py`, `csrc/feature_scans.c`) called directly:
their buffer checks, status codes, metrics and vectorization. How the firing summary and the
rankings use them, against torch, is `tests/monitor/query/`."""

import pytest
import torch
from conftest import native_kernel, vectorized_loops

from featmon_widget.monitor.stats.moments import Totals
from featmon_widget.monitor.stats.protocol import METRIC_CODES, SCAN_BINS
from featmon_widget.monitor.stats.running import metric_of
from featmon_widget.monitor.stats.scans import FeatureScans
from featmon_widget.snapshot.frequency import FREQUENCY_THRESHOLDS
from featmon_widget.types import METRICS


def scans() -> FeatureScans:
    return native_kernel("scans")


def stable_order(values: torch.Tensor, k: int) -> torch.Tensor:
    key = torch.where(torch.isnan(values), float("-inf"), values.double())
    return torch.sort(key, descending=True, stable=True).indices[:k]


def test_the_scans_build_here():
    assert scans() is not None


def test_the_metric_codes_are_the_public_metrics_in_order():
    assert list(METRIC_CODES) == list(METRICS)
    assert list(METRIC_CODES.values()) == list(range(len(METRICS)))


def test_the_compiled_metrics_rank_as_metric_of_on_continuous_values():
    # Distinct values everywhere: a metric computed differently would reorder some of them.
    g = torch.Generator().manual_seed(7)
    n = 50_000
    count = torch.randint(0, 10**6, (n,), generator=g)
    active = (count * torch.rand(n, generator=g, dtype=torch.float64)).to(torch.int64)
    rand = lambda: torch.rand(n, generator=g, dtype=torch.float64)  # noqa: E731
    totals = Totals(count, torch.zeros_like(count), active, rand() * active, rand() - 0.5,
                    rand() * count, -rand(), rand())
    for metric in METRIC_CODES:
        got = scans().top_k_metric(totals, metric, 10_000)
        assert torch.equal(got, stable_order(metric_of(totals, metric), 10_000)), metric


def test_top_k_with_k_equal_to_n_is_the_full_stable_order():
    v = torch.tensor([1.0, float("nan"), 1.0, 3.0, -float("inf")], dtype=torch.float64)
    assert torch.equal(scans().top_k(v, 5), stable_order(v, 5))


@pytest.mark.parametrize("bad", ["float32", "k = 0", "k > n", "strided", "2-d"])
def test_top_k_refuses_what_it_could_overrun(bad):
    v = torch.arange(10, dtype=torch.float64)
    k = 3
    if bad == "float32":
        v = v.float()
    elif bad == "k = 0":
        k = 0
    elif bad == "k > n":
        k = 11
    elif bad == "strided":
        v = torch.arange(20, dtype=torch.float64)[::2]
    else:
        v = v.view(2, 5)
    with pytest.raises(ValueError, match="wrong shape, dtype or layout"):
        scans().top_k(v, k)


@pytest.mark.parametrize("bad", ["unknown metric", "int32 count", "short mean", "k > n"])
def test_top_k_metric_refuses_what_it_could_overrun(bad):
    n = 8
    totals = Totals(torch.ones(n, dtype=torch.int64), torch.zeros(n, dtype=torch.int64),
                    torch.ones(n, dtype=torch.int64), *(torch.zeros(n, dtype=torch.float64)
                                                        for _ in range(5)))
    metric, k = "mean", 2
    if bad == "unknown metric":
        metric = "median"
    elif bad == "int32 count":
        totals = totals._replace(count=totals.count.int())
    elif bad == "short mean":
        totals = totals._replace(mean=totals.mean[:4])
    else:
        k = n + 1
    with pytest.raises(ValueError, match="wrong shape, dtype or layout"):
        scans().top_k_metric(totals, metric, k)


def test_the_c_scan_refuses_a_metric_code_it_does_not_have():
    n = 4
    ints = [torch.zeros(n, dtype=torch.int64) for _ in range(2)]
    floats = [torch.zeros(n, dtype=torch.float64) for _ in range(5)]
    out = torch.empty(1, dtype=torch.int64)
    for code in (-1, len(METRIC_CODES)):
        status = scans().c.featmon_top_k_metric(code, *(t.data_ptr() for t in ints + floats),
                                                n, 1, out.data_ptr())
        assert status == -2


def test_status_codes_become_python_errors():
    class Refusing:
        def __init__(self, status):
            self.featmon_top_k = lambda *args: status

    v = torch.arange(10, dtype=torch.float64)
    with pytest.raises(MemoryError, match="heap of 3"):
        FeatureScans(Refusing(-1)).top_k(v, 3)
    with pytest.raises(ValueError, match="status -2"):
        FeatureScans(Refusing(-2)).top_k(v, 3)


@pytest.mark.parametrize("bad", ["float thresholds", "short thresholds", "int32 counts",
                                 "different lengths"])
def test_firing_summary_refuses_what_it_could_overrun(bad):
    active, count = torch.zeros(5, dtype=torch.int64), torch.ones(5, dtype=torch.int64)
    thresholds = FREQUENCY_THRESHOLDS
    if bad == "float thresholds":
        thresholds = thresholds.float()
    elif bad == "short thresholds":
        thresholds = thresholds[:-1]
    elif bad == "int32 counts":
        count = count.int()
    else:
        active = active[:4]
    with pytest.raises(ValueError, match="wrong shape, dtype or layout"):
        scans().firing_summary(active, count, thresholds, 1e-5)


def test_firing_summary_of_no_features_is_all_zero():
    empty = torch.zeros(0, dtype=torch.int64)
    out = scans().firing_summary(empty, empty, FREQUENCY_THRESHOLDS, 1e-5)
    assert out.shape == (SCAN_BINS + 4,) and out.eq(0).all()


def test_the_scans_are_vectorized(tmp_path):
    """The AVX-512 clone (x86-64-v4, which converts int64 to double in vectors) vectorizes every
    loop of the three hot functions; checked in gcc's own report, not only by timing."""
    loops = vectorized_loops(tmp_path, "scans")
    assert set(loops) == {"bin_chunk", "any_above", "metric_block"}
    if not any(loops.values()):
        pytest.skip("not an x86-64 gcc build (no clones)")
    assert max(loops["bin_chunk"]) == 1
    assert max(loops["any_above"]) == 1
    assert max(loops["metric_block"]) == 8  # one loop per metric
