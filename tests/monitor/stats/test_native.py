"""The C kernels of `stats/native.py` (dense statistics, row top-k, the TopK table) against
their torch definitions; building and loading them is `test_library.py`, which calls run is
`test_backend.py`."""

import math
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch
from conftest import native_kernel, vectorized_loops

from featmon_widget.monitor.record.row_maxima import dense_row_maxima
from featmon_widget.monitor.stats import native
from featmon_widget.monitor.stats.backend import KERNELS
from featmon_widget.monitor.stats.kernels import StatisticsKernels
from featmon_widget.monitor.stats.moments import batch_moments
from featmon_widget.monitor.stats.protocol import HEADER, RECORD


def sparse_accumulator():
    return native_kernel("sparse")


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


# The dense statistics kernel (csrc/dense_moments.c) against batch_moments, its definition.


def _moments_close(got, want):
    for name, a, b in zip(want._fields, got, want, strict=True):
        if name in ("count", "nan_count", "active_count", "min", "max"):
            assert torch.equal(a, b), name  # exact
        else:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 3), (7, 1500), (9, 1024), (33, 2 * 4096 + 100)])
@pytest.mark.parametrize("threshold", [0.0, 0.1, -0.3, 1e39, -1e39])
@pytest.mark.parametrize("avx512", ["1", "0"])  # the AVX-512 sweep, or gcc's (FEATMON_AVX512)
def test_dense_kernel_matches_batch_moments(dtype, shape, threshold, avx512, monkeypatch):
    monkeypatch.setenv("FEATMON_AVX512", avx512)
    gen = torch.Generator().manual_seed(sum(shape))
    n, f = shape
    x = (torch.randn(n, f, generator=gen) * 2).to(dtype)
    flat = x.view(-1)
    bad = (float("nan"), float("inf"), -float("inf"))
    for j, at in enumerate(range(0, flat.numel(), 97)):
        flat[at] = bad[j % 3]
    shift = torch.randn(f, generator=gen, dtype=torch.float64)
    kernel = native_kernel("dense")
    for valid in (None, torch.rand(n, generator=gen) > 0.3):
        _moments_close(kernel(x, valid, shift, threshold), batch_moments(x, valid, shift,
                                                                          threshold))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_the_avx512_sweep_and_gccs_sum_bit_for_bit_alike(dtype, monkeypatch):
    """Saved statistics reload bit for bit (test_saving_v1/v2) whichever sweep made them."""
    gen = torch.Generator().manual_seed(11)
    x = (torch.randn(70, 4096 + 77, generator=gen) * 3).to(dtype)
    x.view(-1)[::89] = float("nan")
    x.view(-1)[5::97] = -0.0
    shift = torch.randn(x.shape[1], generator=gen, dtype=torch.float64)
    valid = torch.rand(70, generator=gen) > 0.2
    got = {}
    for avx512 in ("1", "0"):
        monkeypatch.setenv("FEATMON_AVX512", avx512)
        got[avx512] = native_kernel("dense").with_row_maxima(x, valid, shift, -0.5, 7)
    for a, b in zip([*got["1"][0], *got["1"][1]], [*got["0"][0], *got["0"][1]], strict=True):
        assert torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8))


def test_both_sweeps_apply_jumprelu_bit_for_bit_alike(monkeypatch):
    """Our SAEs' activation applied in place by the pass: the same features (NaN stays NaN,
    +inf under its jump becomes NaN, the rest 0) and sums from either sweep."""
    gen = torch.Generator().manual_seed(12)
    pre = torch.randn(70, 4096 + 77, generator=gen) * 3
    pre.view(-1)[::89] = float("nan")
    pre.view(-1)[3::97] = float("inf")
    pre.view(-1)[7::101] = -float("inf")
    jump = torch.rand(pre.shape[1], generator=gen)
    jump[::5] = -float("inf")  # ReLU columns
    jump[1::7] = float("inf")  # nothing passes: +inf becomes NaN
    valid = torch.rand(70, generator=gen) > 0.2
    shift = torch.zeros(pre.shape[1], dtype=torch.float64)
    got = {}
    for avx512 in ("1", "0"):
        monkeypatch.setenv("FEATMON_AVX512", avx512)
        x = pre.clone()
        moments, maxima = native_kernel("dense").with_row_maxima(x, valid, shift, 0.0, 7, jump)
        got[avx512] = [x, *moments, *maxima]
    want = torch.relu(pre) * (pre > jump)
    assert torch.equal(got["1"][0].isnan(), want.isnan())
    assert torch.equal(got["1"][0].nan_to_num(), want.nan_to_num())
    for a, b in zip(got["1"], got["0"], strict=True):
        assert torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dense_kernel_widens_every_16_bit_value_exactly(dtype):
    """All 65,536 bit patterns, one per feature: min and max are the value itself."""
    x = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16).view(dtype)[None]
    got = native_kernel("dense")(x, None, torch.zeros(x.shape[1], dtype=torch.float64), 0.0)
    wide = x[0].to(torch.float64)
    finite = torch.isfinite(wide)
    assert torch.equal(got.count, finite.long()) and torch.equal(got.nan_count, (~finite).long())
    assert torch.equal(got.min[finite], wide[finite]) and torch.equal(got.max[finite],
                                                                      wide[finite])
    assert torch.equal(got.active_count, (finite & (wide > 0)).long())


def test_dense_kernel_threads_give_identical_results(monkeypatch):
    x = torch.randn(40, 5000)
    shift = torch.zeros(5000, dtype=torch.float64)
    kernel = native_kernel("dense")
    monkeypatch.setattr(native, "_THREADED_STATISTICS", 1 << 62)
    single = kernel(x, None, shift, 0.0)
    monkeypatch.setattr(native, "_THREADED_STATISTICS", 0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    for a, b in zip(single, kernel(x, None, shift, 0.0), strict=True):
        assert torch.equal(a, b)  # each feature is summed in the same order either way


def test_dense_kernel_with_no_valid_row_reports_nothing_seen():
    x = torch.randn(3, 4)
    got = native_kernel("dense")(x, torch.zeros(3, dtype=torch.bool),
                                 torch.zeros(4, dtype=torch.float64), 0.0)
    assert got.count.tolist() == got.nan_count.tolist() == got.active_count.tolist() == [0] * 4
    assert got.min.tolist() == [math.inf] * 4 and got.max.tolist() == [-math.inf] * 4
    empty = native_kernel("dense")(torch.randn(0, 4), None, torch.zeros(4, dtype=torch.float64),
                                   0.0)
    assert empty.count.tolist() == [0] * 4


@pytest.mark.parametrize("bad", ["float64 acts", "strided acts", "short shift", "short valid",
                                 "float32 shift"])
def test_dense_kernel_refuses_buffers_it_could_overrun(bad):
    x, shift, valid = torch.randn(4, 6), torch.zeros(6, dtype=torch.float64), None
    if bad == "float64 acts":
        x = x.double()
    elif bad == "strided acts":
        x = torch.randn(6, 4).T
    elif bad == "short shift":
        shift = shift[:5]
    elif bad == "short valid":
        valid = torch.ones(3, dtype=torch.bool)
    else:
        shift = shift.float()
    with pytest.raises(ValueError, match="wrong shape, dtype or layout"):
        native_kernel("dense")(x, valid, shift, 0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("batch", "tokens"), [(1, 1), (1, 37), (5, 6), (3, 1), (2, 19)])
@pytest.mark.parametrize("avx512", ["1", "0"])
def test_row_maxima_from_the_statistics_pass_equal_a_separate_pass(dtype, batch, tokens, avx512,
                                                                   monkeypatch):
    monkeypatch.setenv("FEATMON_AVX512", avx512)
    gen = torch.Generator().manual_seed(batch * 100 + tokens)
    f = 4096 + 100  # crosses a tile
    # Few distinct values, so ties (earliest token wins) are common.
    x = (torch.randint(-2, 4, (batch * tokens, f), generator=gen) * 0.5).to(dtype)
    x.view(-1)[::53] = float("nan")
    x.view(-1)[7::61] = float("inf")
    shift = torch.zeros(f, dtype=torch.float64)
    kernel = native_kernel("dense")
    for valid in (None, torch.rand(batch * tokens, generator=gen) > 0.4):
        for threshold in (0.0, 0.7, -1.0):
            moments, maxima = kernel.with_row_maxima(x, valid, shift, threshold, tokens)
            _moments_close(moments, batch_moments(x, valid, shift, threshold))
            ok = (torch.ones(batch * tokens, dtype=torch.bool) if valid is None else valid)
            want = dense_row_maxima(x.view(batch, tokens, f), ok.view(batch, tokens), threshold)
            assert torch.equal(maxima.value, want[0])
            seen = maxima.value > -math.inf
            assert torch.equal(maxima.token[seen], want[1][seen])
            assert (maxima.token[~seen] == 0).all()


@pytest.mark.slow  # compiles and runs the C kernels with their checks
def test_dense_sweeps_are_vectorized(tmp_path):
    """Unvectorized, the statistics kernel is 20-30x a read: check gcc's own report for every
    sweep (each `SWEEP(...)` line), not only the timings."""
    compiler = shutil.which("gcc")
    if compiler is None:
        pytest.skip("the vectorization report is gcc's")
    source = resources.files(native.__package__).joinpath("csrc", "dense_moments.c")
    text = source.read_text()
    sweeps = [n for n, line in enumerate(text.splitlines(), 1) if line.startswith("SWEEP(")]
    assert len(sweeps) == 8
    src = tmp_path / "dense_moments.c"
    src.write_text(text)
    (tmp_path / HEADER).write_text(
        resources.files(native.__package__).joinpath("csrc", HEADER).read_text())
    flags = KERNELS["dense"].flags[0]
    report = subprocess.run([compiler, *flags, "-fopt-info-vec-all", "-o",
                             str(tmp_path / "k.so"), str(src)], capture_output=True, text=True,
                            check=True).stderr
    # Each sweep has two loops (four rows, one row); every compiled version of it (x86: AVX-512,
    # AVX2, baseline clones) must vectorize both.
    for line in sweeps:
        notes = re.findall(rf"dense_moments.c:{line}:1: note: vectorized (\d+) loops", report)
        assert notes and set(notes) == {"2"}, (line, notes)


@pytest.mark.slow  # compiles and runs the C kernels with their checks
def test_example_row_maxima_are_vectorized_in_every_clone(tmp_path):
    """The examples' row-maxima tiles (csrc/examples.c), per gcc's report: each compiled version
    (x86: x86-64-v4, x86-64-v3 and baseline clones) vectorizes its one loop."""
    loops = vectorized_loops(tmp_path, "examples")
    assert set(loops) == {"tile_f32", "tile_bf16", "sample_tile_f32", "sample_tile_bf16"}
    assert all(counts and set(counts) == {1} for counts in loops.values()), loops


def test_statistics_kernels_take_strided_masks():
    """A mask sliced from a wider one (positions hand these over) is made contiguous."""
    x = torch.randn(6, 5)
    valid = torch.rand(6, 2) > 0.3
    shift = torch.zeros(5, dtype=torch.float64)
    got = StatisticsKernels(compile=False)(x, valid[:, 0], shift, 0.0)
    _moments_close(got, batch_moments(x, valid[:, 0], shift, 0.0))


def _run_dense_check(tmp_path, compiler: str, *runner: str,
                     defines: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Build csrc/dense_check.c (a torch-free self-check) with the kernel, and run it."""
    csrc = resources.files(native.__package__).joinpath("csrc")
    check = Path(__file__).parent / "csrc" / "dense_check.c"
    for name in ("dense_moments.c", HEADER):
        (tmp_path / name).write_text(csrc.joinpath(name).read_text())
    flags = [f for f in KERNELS["dense"].flags[0] if f not in ("-shared", "-fPIC")]
    exe = tmp_path / "dense_check"
    subprocess.run([compiler, *flags, *defines, "-I", str(tmp_path), "-o", str(exe), str(check),
                    str(tmp_path / "dense_moments.c"), "-lm"], check=True, capture_output=True)
    return subprocess.run([*runner, str(exe)], capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # compiles and runs the C kernels with their checks
@pytest.mark.parametrize("count_rows", [None, 8], ids=["default", "counts-folded-every-8-rows"])
def test_dense_kernel_self_check_passes_here(tmp_path, count_rows):
    """The int32 per-tile counts are folded into int64 every 2**30 rows; built with 8 the
    folding runs many times per call and must not change a count."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    defines = () if count_rows is None else (f"-DCOUNT_ROWS={count_rows}",)
    result = _run_dense_check(tmp_path, compiler, defines=defines)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout


@pytest.mark.slow  # compiles and runs the C kernels with their checks
def test_dense_kernel_is_exact_on_aarch64(tmp_path):
    """Portable C: built for ARM (NEON) and run under qemu user-mode emulation, where the
    Debian packages gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user are installed
    (not in CI); float16 widening is checked against the hardware's own conversion there."""
    compiler, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if compiler is None or qemu is None:
        pytest.skip("no aarch64 cross compiler and qemu here")
    result = _run_dense_check(tmp_path, compiler, qemu, "-L", "/usr/aarch64-linux-gnu")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout


@pytest.mark.slow  # compiles and runs the C kernels with their checks
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps")
def test_openmp_build_shares_torchs_runtime(tmp_path):
    """Loading the kernel next to torch adds no OpenMP runtime of its own: its threads are
    torch's (no second pool competing for the cores). In a fresh process, as a user has it."""
    script = (
        "import torch\n"
        "from pathlib import Path\n"
        "from featmon_widget.monitor.stats.backend import Backend\n"
        "def runtimes():\n"
        "    return {l.split()[-1] for l in Path('/proc/self/maps').read_text().splitlines()\n"
        "            if 'gomp' in l or 'omp.so' in l}\n"
        "torch.ones(2).sum()\n"
        "before = runtimes()\n"
        "b = Backend(native=True)\n"
        "assert b.kernel('dense') is not None and b.kernel('row_topk') is not None\n"
        "print(sorted(before), sorted(runtimes()))\n"
        "assert runtimes() == before, (before, runtimes())\n"
    )
    env = {**os.environ, "FEATMON_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def _stable_top(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest first, NaN above numbers, equal values by lower index: a stable sort."""
    key = torch.where(torch.isnan(x), torch.inf, x)
    nan_first = torch.isnan(x).to(torch.int8)
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    # NaN ranks above +inf: move NaNs (in index order) ahead, stably.
    order = order.gather(1, torch.sort(nan_first.gather(1, order), dim=1, descending=True,
                                       stable=True).indices)
    return order[:, :k].to(torch.int32), x.gather(1, order[:, :k])


@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_row_topk_matches_a_stable_sort(k):
    gen = torch.Generator().manual_seed(k)
    x = torch.relu(torch.randn(30, 40 if k == 40 else 3000, generator=gen) - 0.5)
    x[:, ::7] = 1.0  # ties
    x[3, 5], x[4, 9], x[4, 2] = float("nan"), float("nan"), -float("inf")
    x[6] = -float("inf")  # a row of -inf only
    x[7] = 0.0  # a row of zeros: every entry ties
    pick = torch.tensor([29, 0, 3, 4, 6, 7, 7, 12])
    idx, val = native_kernel("row_topk")(x, pick, k)
    want_idx, want_val = _stable_top(x[pick], k)
    assert torch.equal(idx, want_idx)
    torch.testing.assert_close(val, want_val, equal_nan=True, rtol=0, atol=0)


def test_row_topk_values_equal_torch_topk_on_distinct_values():
    x = torch.randn(50, 5000, generator=torch.Generator().manual_seed(3))
    pick = torch.arange(49, -1, -3)
    idx, val = native_kernel("row_topk")(x, pick, 10)
    want_val, want_idx = torch.topk(x[pick], 10, dim=1)
    assert torch.equal(val, want_val) and torch.equal(idx, want_idx.to(torch.int32))


def test_row_topk_never_reads_outside_the_rows():
    x = torch.randn(4, 20)
    idx, val = native_kernel("row_topk")(x, torch.tensor([0, 4, -1, 3]), 2)
    assert idx[[1, 2]].eq(-1).all() and val[[1, 2]].isnan().all()
    assert torch.equal(idx[0], torch.topk(x[0], 2).indices.to(torch.int32))
