"""The dense statistics pass writes into buffers its owner keeps (`DenseOutputs`): the same
memory every forward, the same results as fresh tensors, fresh ones for a caller without."""

import torch
from conftest import native_kernel

from featmon_widget.monitor.stats.dense_outputs import DenseOutputs
from featmon_widget.monitor.stats.kernels import StatisticsKernels
from featmon_widget.monitor.stats.moments import batch_moments


def _batch(seed: int, n: int = 12, f: int = 4096 + 50) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.relu(torch.randn(n, f, generator=gen) - 0.5)
    x[1, 3] = float("nan")
    return x


def _same(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_an_owner_gets_the_same_buffers_each_pass_holding_what_fresh_ones_would():
    kernel = native_kernel("dense")
    out = DenseOutputs()
    shift = torch.zeros(4096 + 50, dtype=torch.float64)
    first, first_max = kernel.with_row_maxima(_batch(0), None, shift, 0.0, 4, out=out)
    kept = [t.data_ptr() for t in first]
    fresh_first = kernel.with_row_maxima(_batch(0), None, shift, 0.0, 4)
    assert _same(first, fresh_first[0]) and _same(first_max, fresh_first[1])
    second, second_max = kernel.with_row_maxima(_batch(1), None, shift, 0.0, 4, out=out)
    assert [t.data_ptr() for t in second] == kept
    # The row maxima grow with the batch: new each call, so the first call's stay as they were.
    assert second_max.value.data_ptr() != first_max.value.data_ptr()
    assert _same(first_max, fresh_first[1])
    fresh, fresh_max = kernel.with_row_maxima(_batch(1), None, shift, 0.0, 4)
    assert _same(second, fresh) and _same(second_max, fresh_max)
    assert out.nbytes == sum(t.nbytes for t in second) + 12 * 8  # + the rows' numbers


def test_a_new_shape_takes_new_buffers_and_a_caller_without_an_owner_fresh_ones():
    kernel = native_kernel("dense")
    out = DenseOutputs()
    shift = torch.zeros(4096 + 50, dtype=torch.float64)
    wide = kernel(_batch(0), None, shift, 0.0, out=out)
    narrow = kernel(_batch(0, n=8), None, shift, 0.0, out=out)
    assert wide.count.data_ptr() != narrow.count.data_ptr()
    assert _same(narrow, kernel(_batch(0, n=8), None, shift, 0.0))
    a, b = kernel(_batch(0), None, shift, 0.0), kernel(_batch(1), None, shift, 0.0)
    assert a.count.data_ptr() != b.count.data_ptr()  # the first still holds its results
    assert not _same(a, b)


def test_the_kept_buffers_are_reported_in_the_monitor_memory():
    from featmon_widget import FeatureMonitor
    monitor = FeatureMonitor(4096 + 50, compile=False, native=True)
    assert monitor.state.memory_bytes["scratch"] == 0
    monitor.on_activation(_batch(0))
    assert monitor.state.memory_bytes["scratch"] == 64 * (4096 + 50) + 8 * 12
    monitor.close()


def test_statistics_kernels_merge_each_pass_before_the_next_reuses_its_buffers():
    kernels = StatisticsKernels(compile=False, native=True)
    shift = torch.zeros(4096 + 50, dtype=torch.float64)
    x, y = _batch(0), _batch(1)
    got_x = kernels(x, None, shift, 0.0)
    want_x = batch_moments(x, None, shift, 0.0)
    for a, b in zip(got_x, want_x, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9)
    got_y = kernels(y, None, shift, 0.0)
    assert got_y.count.data_ptr() == got_x.count.data_ptr()
    for a, b in zip(got_y, batch_moments(y, None, shift, 0.0), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9)
