"""The dense statistics pass merging into the running totals as it goes (`into`,
csrc/dense_moments.c): the same bits as its moments merged afterwards by `merge_moments_`,
eager or compiled, so a save reloads bit for bit whichever path made it; and the monitor's
paths that use it."""

import pytest
import torch
from conftest import native_kernel

from featmon_widget import FeatureMonitor, SparseAutoencoder
from featmon_widget.monitor.stats import native
from featmon_widget.monitor.stats.kernels import StatisticsKernels
from featmon_widget.monitor.stats.moments import empty_totals, merge_moments_, shift_for


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(-1).view(torch.uint8)


def _forwards(dtype: torch.dtype, f: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Three forwards with NaN / ±Inf, padding, repeated values and features first seen in
    the second forward (all NaN in the first)."""
    gen = torch.Generator().manual_seed(f)
    out = []
    for i, n in enumerate((9, 33, 4)):
        x = (torch.randn(n, f, generator=gen) * 2 + 0.3).to(dtype)
        x.view(-1)[i::89] = float("nan")
        x.view(-1)[i + 3::97] = float("inf")
        x.view(-1)[i + 5::101] = -float("inf")
        x[:, ::13] = 0.5  # ties and a zero variance
        if i == 0:
            x[:, 7::11] = float("nan")  # never seen until the second forward
        out.append((x, None if i == 1 else torch.rand(n, generator=gen) > 0.3))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("threshold", [0.0, -0.3])
@pytest.mark.parametrize("avx512", ["1", "0"])
@pytest.mark.parametrize("threads", [1, 3])
def test_merging_in_the_pass_equals_merging_its_moments_bit_for_bit(dtype, threshold, avx512,
                                                                    threads, monkeypatch):
    monkeypatch.setenv("FEATMON_AVX512", avx512)
    monkeypatch.setattr(native, "_THREADED_STATISTICS", 0 if threads > 1 else 1 << 62)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    f = 2 * 2048 + 77  # three tiles, the last one partial
    kernel = native_kernel("dense")
    compiled = StatisticsKernels(compile=True, native=False)
    in_pass, own_shift, eager, merged = (empty_totals(f, torch.device("cpu")) for _ in range(4))
    for x, valid in _forwards(dtype, f):
        shift = shift_for(x, in_pass.mean, in_pass.count, valid)
        assert kernel(x, valid, shift, threshold, into=in_pass) is None
        assert kernel(x, valid, None, threshold, into=own_shift) is None  # shift_for in C
        moments = kernel(x, valid, shift, threshold)
        merge_moments_(eager, shift, moments)
        compiled.merge(merged, shift, moments)
        for name, a, b, c, d in zip(in_pass._fields, in_pass, eager, merged, own_shift,
                                    strict=True):
            assert torch.equal(bits(a), bits(b)), name
            assert torch.equal(bits(a), bits(c)), name
            assert torch.equal(bits(a), bits(d)), name
    assert compiled.runner.mode == "compiled"
    assert int(in_pass.count[7]) > 0 and float(in_pass.m2.max()) > 0


def test_the_activating_pass_merges_as_its_moments_would():
    """Our SAEs' JumpReLU applied in place, with the row maxima, merged in the pass; the
    shift of never-seen features taken by the pass from the first valid row, activated."""
    gen = torch.Generator().manual_seed(5)
    pre = torch.randn(12, 3000, generator=gen) * 2
    pre.view(-1)[::91] = float("inf")
    jump = torch.rand(3000, generator=gen)
    jump[::4] = -float("inf")
    valid = torch.rand(12, generator=gen) > 0.25
    valid[0] = False  # the first valid row is not the first row
    kernel = native_kernel("dense")
    start = empty_totals(3000, torch.device("cpu"))
    seen = torch.randn(5, 3000, generator=gen)
    seen[:, ::3] = float("nan")  # a third never seen before this forward
    before = shift_for(seen, start.mean, start.count)
    merge_moments_(start, before, kernel(seen, None, before, 0.1))
    in_pass = type(start)(*(t.clone() for t in start))
    activated = torch.relu(pre) * (pre > jump)
    shift = shift_for(activated, start.mean, start.count, valid)
    assert int((start.count == 0).sum()) == 1000 and bool(shift.ne(0).any())
    a, b = pre.clone(), pre.clone()
    _, maxima_a = kernel.with_row_maxima(a, valid, None, 0.1, 4, jump, into=in_pass)
    moments, maxima_b = kernel.with_row_maxima(b, valid, shift, 0.1, 4, jump)
    merge_moments_(start, shift, moments)
    assert torch.equal(bits(a), bits(b))
    for x, y in zip([*in_pass, *maxima_a], [*start, *maxima_b], strict=True):
        assert torch.equal(bits(x), bits(y))


@pytest.mark.parametrize("bad", ["int32 count", "strided mean", "short m2", "float32 max",
                                 "no shift, no totals"])
def test_totals_the_pass_could_overrun_are_refused_and_left_as_they_were(bad):
    x = torch.randn(6, 10)
    totals = list(empty_totals(10, torch.device("cpu")))
    if bad == "int32 count":
        totals[0] = totals[0].int()
    elif bad == "strided mean":
        totals[4] = torch.zeros(20, dtype=torch.float64)[::2]
    elif bad == "short m2":
        totals[5] = totals[5][:9]
    elif bad == "float32 max":
        totals[7] = totals[7].float()
    before = [t.clone() for t in totals]
    kept = x.clone()
    into = type(empty_totals(1, torch.device("cpu")))(*totals)
    shift = torch.zeros(10, dtype=torch.float64)
    if bad == "no shift, no totals":  # the pass takes the shift only from totals
        shift, into = None, None
    with pytest.raises(ValueError, match="wrong shape, dtype or layout"):
        native_kernel("dense")(x, None, shift, 0.0, into=into)
    assert all(torch.equal(a, b) for a, b in zip(totals, before, strict=True))
    assert torch.equal(x, kept)


# ---- the monitor's paths ---------------------------------------------------------------------


class MergeCounter:
    """Counts `StatisticsKernels.merge` calls (the separate merge after a pass)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = StatisticsKernels.merge

        def counted(kernels, *args):
            self.calls += 1
            return original(kernels, *args)

        monkeypatch.setattr(StatisticsKernels, "merge", counted)


def test_dense_forwards_merge_in_the_pass_and_match_the_torch_path(monkeypatch):
    counter = MergeCounter(monkeypatch)
    gen = torch.Generator().manual_seed(8)
    acts = [torch.relu(torch.randn(3, 5, 700, generator=gen)) for _ in range(3)]
    monitors = {k: FeatureMonitor(700, native=k, compile=False) for k in (True, False)}
    for monitor in monitors.values():
        for a in acts:
            monitor.on_activation(a)
    assert counter.calls == 3  # the torch path's three; the native pass merged its own
    mine, theirs = (m._recording.stats.totals for m in monitors.values())
    for name, a, b in zip(mine._fields, mine, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


def test_encoded_forwards_merge_in_the_pass_except_where_health_samples(monkeypatch):
    """A health-sampled forward decodes after the pass and may fail: its moments are merged
    afterwards, so a failed decode changes nothing (test_ingest); the others merge in the
    pass."""
    counter = MergeCounter(monkeypatch)
    g = torch.Generator().manual_seed(9)
    sae = SparseAutoencoder.from_tensors(torch.randn(16, 600, generator=g), torch.zeros(600),
                                         torch.randn(600, 16, generator=g), torch.zeros(16))
    monitor = FeatureMonitor(600, native=True, compile=False, health_every=4)
    reference = FeatureMonitor(600, native=False, compile=False, health_every=4)
    for i in range(8):
        x = torch.randn(2, 6, 16, generator=g)
        monitor._ingest.encoded(sae, x, f"r{i}", None, None)
        calls = counter.calls
        reference._ingest.encoded(sae, x, f"r{i}", None, None)
        assert counter.calls == calls + 1  # the torch path merges every forward
    assert counter.calls == 2 + 8  # forwards 0 and 4 sampled by the health check
    mine, theirs = monitor._recording.stats.totals, reference._recording.stats.totals
    for name, a, b in zip(mine._fields, mine, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9, msg=name)


@pytest.mark.parametrize("rows", ["no valid row", "no row"])
def test_merging_a_forward_with_nothing_counted_leaves_the_totals_as_they_were(rows):
    kernel = native_kernel("dense")
    totals = empty_totals(3000, torch.device("cpu"))
    seen = torch.randn(4, 3000, generator=torch.Generator().manual_seed(7))
    kernel(seen, None, None, 0.2, into=totals)
    before = [t.clone() for t in totals]
    if rows == "no valid row":
        x, valid = torch.randn(5, 3000), torch.zeros(5, dtype=torch.bool)
    else:
        x, valid = torch.randn(0, 3000), None
    assert kernel(x, valid, None, 0.2, into=totals) is None
    for name, a, b in zip(totals._fields, totals, before, strict=True):
        assert torch.equal(bits(a), bits(b)), name
