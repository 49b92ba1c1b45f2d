import math
import warnings

import pytest
import torch

from featmon_widget.monitor.stats import native
from featmon_widget.monitor.stats.native import RECORD, sparse_accumulator


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """An empty cache and no loaded library, restored afterwards."""
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setenv("FEATMON_CACHE_DIR", str(tmp_path))
    return tmp_path


def _empty_table(f: int) -> torch.Tensor:
    table = torch.zeros(f + 2, RECORD, dtype=torch.float64)
    table[:, 6], table[:, 7] = math.inf, -math.inf
    return table


def _reference(indices, values, valid, f, shift, threshold):
    """Per-record sums the slow, obvious way."""
    table = _empty_table(f)
    for r in range(indices.shape[0]):
        for i, x in zip(indices[r].tolist(), values[r].double().tolist(), strict=True):
            i = f if not valid[r] else i if 0 <= i < f else f + 1
            a = table[i]
            if not math.isfinite(x):
                a[1] += 1
                continue
            d = x - shift[i].item()
            a[0] += 1
            if x > threshold:
                a[2] += 1
                a[3] += x
            a[4] += d
            a[5] += d * d
            a[6] = min(a[6].item(), x)
            a[7] = max(a[7].item(), x)
    return table


def test_kernel_builds_here():
    """CI machines have a C compiler (torch.compile needs one), so the fast path is tested."""
    assert sparse_accumulator() is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_matches_a_plain_python_reference(dtype):
    gen = torch.Generator().manual_seed(0)
    f, n, k = 20, 30, 5
    indices = torch.randint(-3, f + 3, (n, k), generator=gen)  # some out of range both ways
    values = torch.randn(n, k, generator=gen, dtype=dtype)
    values[0, 0], values[1, 1], values[2, 2] = float("nan"), float("inf"), -float("inf")
    valid = torch.rand(n, generator=gen) > 0.2
    shift = torch.randn(f + 2, generator=gen, dtype=torch.float64)
    shift[f:] = 0.0
    table, rows = _empty_table(f), torch.zeros(1, dtype=torch.float64)
    accumulate = sparse_accumulator()
    accumulate(table, rows, shift, indices, values, valid, 0.25)
    accumulate(table, rows, shift, indices, values, valid, 0.25)  # accumulates, not overwrites
    ref = _reference(torch.cat([indices, indices]), torch.cat([values, values]),
                     torch.cat([valid, valid]), f, shift, 0.25)
    assert rows.item() == 2 * valid.sum().item()
    assert torch.equal(table[:, [0, 1, 2, 6, 7]], ref[:, [0, 1, 2, 6, 7]])
    torch.testing.assert_close(table, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bad", ["values dtype", "strided values", "short valid", "table shape"])
def test_kernel_refuses_buffers_it_could_overrun(bad):
    f, n, k = 6, 4, 2
    table, rows = _empty_table(f), torch.zeros(1, dtype=torch.float64)
    shift = torch.zeros(f + 2, dtype=torch.float64)
    indices, values = torch.zeros(n, k, dtype=torch.int64), torch.ones(n, k)
    valid = torch.ones(n, dtype=torch.bool)
    if bad == "values dtype":
        values = values.half()
    elif bad == "strided values":
        values = torch.ones(k, n).T
    elif bad == "short valid":
        valid = valid[:2]
    else:
        table = _empty_table(f - 1)
    before = table.clone()
    with pytest.raises(ValueError, match="wrong shape, dtype or layout"):
        sparse_accumulator()(table, rows, shift, indices, values, valid, 0.0)
    assert torch.equal(table, before)


def test_switched_off_by_environment(monkeypatch, fresh_build):
    monkeypatch.setenv("FEATMON_NATIVE", "0")
    assert sparse_accumulator() is None


def test_no_compiler_warns_once_and_falls_back(monkeypatch, fresh_build):
    monkeypatch.setenv("CC", str(fresh_build / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match="native sparse kernel unavailable"):
        assert sparse_accumulator() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sparse_accumulator() is None  # decided once, no second warning

    from featmon_widget.monitor.stats.compiled import CompiledStatistics
    from featmon_widget.monitor.stats.running import RunningStats

    stats = RunningStats(5, torch.device("cpu"), CompiledStatistics(compile=False))
    stats.update_sparse(torch.tensor([[0, 4]]), torch.tensor([[1.0, 2.0]]),
                        torch.ones(1, dtype=torch.bool), 0.0)
    assert stats.pending_table is None
    assert stats.count.tolist() == [1, 1, 1, 1, 1]


def test_built_library_is_cached(monkeypatch, fresh_build):
    first = native.build_library()
    monkeypatch.setattr(native.subprocess, "run", lambda *a, **k: pytest.fail("recompiled"))
    assert native.build_library() == first
    assert first.parent == fresh_build
