"""Building the kernels' libraries (`stats/library.py`) and loading them once per process
(`backend.load_kernel`): the cache key, what may be loaded, and the fallbacks."""

import shutil
import warnings
from importlib import resources
from pathlib import Path

import pytest
import torch

from featmon_widget.monitor.stats import backend, library
from featmon_widget.monitor.stats.backend import KERNELS, Backend
from featmon_widget.monitor.stats.kernels import StatisticsKernels
from featmon_widget.monitor.stats.moments import batch_moments
from featmon_widget.monitor.stats.protocol import HEADER
from featmon_widget.monitor.stats.running import RunningStats


def _package_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the kernels' `csrc/` that the builder reads instead of the package's."""
    root = tmp_path / "package"
    shutil.copytree(Path(str(resources.files(library.__package__).joinpath("csrc"))),
                    root / "csrc")

    class Files:
        @staticmethod
        def files(package: str) -> Path:
            return root

    monkeypatch.setattr(library, "resources", Files)
    return root / "csrc"


def test_built_library_is_cached(monkeypatch, fresh_build):
    first = library.build_library("sparse_accumulate.c")
    monkeypatch.setattr(library.subprocess, "run", lambda *a, **k: pytest.fail("recompiled"))
    assert library.build_library("sparse_accumulate.c") == first
    assert first.parent == fresh_build


def test_the_shared_header_is_built_with_the_source_and_is_part_of_the_key(
        monkeypatch, fresh_build):
    """The builder copies the header next to the source (it is `#include`d), and a changed
    header is a new library, not the cached one."""
    csrc = _package_copy(fresh_build, monkeypatch)
    first = library.build_library("row_topk.c")
    header = csrc / HEADER
    header.write_text(header.read_text() + "\n/* changed */\n")
    second = library.build_library("row_topk.c")
    assert second != first and first.exists() and second.exists()
    header.unlink()
    with pytest.raises(FileNotFoundError):
        library.build_library("row_topk.c")


def test_each_choice_of_flags_is_tried_in_turn(fresh_build):
    with pytest.raises(RuntimeError) as failed:
        library.build_library("row_topk.c", [["-fno-such-flag-a"], ["-fno-such-flag-b"]])
    assert "no-such-flag-a" in str(failed.value) and "no-such-flag-b" in str(failed.value)
    built = library.build_library("row_topk.c", [["-fno-such-flag-a"], library.VECTOR_FLAGS])
    assert built.is_file()


@pytest.mark.slow  # compiles and runs the C kernels with their checks
def test_a_library_planted_under_the_expected_name_is_never_loaded(fresh_build):
    """A library planted at the cache path is never loaded (its constructor would run): only
    one whose SHA-256 was recorded when this process's code built it loads; a planted one is
    rebuilt over."""
    dense, topk = KERNELS["dense"], KERNELS["row_topk"]
    built = library.build_library(dense.source, dense.flags)
    genuine = built.read_bytes()
    built.write_bytes(library.build_library(topk.source, topk.flags).read_bytes())  # valid, wrong
    again = library.build_library(dense.source, dense.flags)
    assert again == built and again.read_bytes() == genuine


def test_a_truncated_library_is_rebuilt(fresh_build):
    built = library.build_library("row_topk.c")
    genuine = built.read_bytes()
    built.write_bytes(genuine[: len(genuine) // 2])
    assert library.build_library("row_topk.c").read_bytes() == genuine


def test_a_cache_folder_others_can_write_to_is_refused(fresh_build, monkeypatch):
    cache = fresh_build / "shared"
    cache.mkdir()
    cache.chmod(0o777)
    monkeypatch.setenv("FEATMON_CACHE_DIR", str(cache))
    with pytest.warns(RuntimeWarning, match="writable by other users"):
        assert Backend(native=True).kernel("dense") is None


def test_the_cache_folder_is_made_owner_only(fresh_build, monkeypatch):
    cache = fresh_build / "new"
    monkeypatch.setenv("FEATMON_CACHE_DIR", str(cache))
    library.build_library("row_topk.c")
    assert cache.stat().st_mode & 0o077 == 0


def test_no_compiler_warns_once_and_falls_back(monkeypatch, fresh_build):
    monkeypatch.setenv("CC", str(fresh_build / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match="native sparse kernel unavailable"):
        assert Backend(native=True).kernel("sparse") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Backend(native=True).kernel("sparse") is None  # decided once per process

    stats = RunningStats(5, torch.device("cpu"), StatisticsKernels(compile=False, native=True))
    stats.update_sparse(torch.tensor([[0, 4]]), torch.tensor([[1.0, 2.0]]),
                        torch.ones(1, dtype=torch.bool), 0.0)
    assert stats.pending_table is None
    assert stats.count.tolist() == [1, 1, 1, 1, 1]


def test_a_library_is_loaded_once_per_process(fresh_build):
    a, b = Backend(native=True), Backend(native=True)
    assert a.kernel("row_topk") is b.kernel("row_topk") is not None
    assert backend.load_kernel(KERNELS["row_topk"]) is a.kernel("row_topk")


@pytest.mark.slow  # compiles and runs the C kernels with their checks
def test_a_compiler_without_openmp_gets_the_pthreads_build(monkeypatch, fresh_build):
    spec = KERNELS["dense"]
    first, fallback = spec.flags
    monkeypatch.setitem(KERNELS, "dense",
                        spec._replace(flags=([*first, "-fno-such-flag-here"], fallback)))
    kernel = Backend(native=True).kernel("dense")
    assert kernel is not None
    x = torch.randn(64, 3000)
    shift = torch.zeros(3000, dtype=torch.float64)
    got, want = kernel(x, None, shift, 0.0), batch_moments(x, None, shift, 0.0)
    for name, a, b in zip(want._fields, got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9, msg=name)
