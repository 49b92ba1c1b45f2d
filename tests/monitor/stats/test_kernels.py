import pytest
import torch

from featmon_widget.monitor.stats.kernels import StatisticsKernels
from featmon_widget.monitor.stats.moments import batch_moments, shift_for, sparse_update
from featmon_widget.monitor.stats.running import RunningStats


def test_compiled_and_eager_kernels_agree():
    gen = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(257, 300, generator=gen))
    x[3, 7] = float("nan")
    x[4, 8] = float("inf")
    x[5, 9] = -float("inf")
    valid = torch.rand(257, generator=gen) > 0.2
    valid[3:6] = True
    shift = shift_for(x, torch.zeros(300, dtype=torch.float64), torch.zeros(300, dtype=torch.long))
    eager = batch_moments(x, valid, shift, 0.1)
    kernel = StatisticsKernels(compile=True, native=False)
    compiled = kernel(x, valid, shift, 0.1)
    assert kernel.mode == "compiled"
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9)
    chunked = StatisticsKernels(compile=False, native=False)(x, valid, shift, 0.1)
    for a, b in zip(eager, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9)


def test_compile_failure_falls_back_to_eager(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(torch, "compile", broken)
    kernel = StatisticsKernels(compile=True, native=False)
    x = torch.rand(4, 3)
    with pytest.warns(RuntimeWarning, match="no compiler"):
        out = kernel(x, torch.ones(4, dtype=torch.bool), torch.zeros(3, dtype=torch.float64), 0.0)
    assert kernel.mode == "eager"
    assert out[0].tolist() == [4, 4, 4]


def test_compiled_sparse_kernel_matches_eager():
    gen = torch.Generator().manual_seed(5)
    values, indices = torch.topk(torch.randn(40, 64, generator=gen), 8, dim=1)
    values = torch.relu(values)
    values[2, 0] = float("inf")
    valid = torch.rand(40, generator=gen) > 0.25
    shift = torch.randn(64, generator=gen, dtype=torch.float64)
    kernel = StatisticsKernels(compile=True)
    state = RunningStats(64, torch.device("cpu")).totals._replace(mean=shift)
    for threshold in (0.0, -0.1):
        compiled = kernel.sparse_update(state, indices, values, valid, threshold)
        eager = sparse_update(state, indices, values, valid, threshold)
        for a, b in zip(compiled, eager, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert kernel.mode == "compiled"
