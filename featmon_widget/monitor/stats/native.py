"""The one CPU kernel aten has no good form for: fold a TopK SAE's (indices, values) into
per-feature records in a single pass (`csrc/sparse_accumulate.c`).

It is compiled on first use with the system C compiler (the one `torch.compile` needs on CPU
anyway) into a per-user cache and loaded with ctypes. If there is no compiler or anything else
goes wrong, `sparse_accumulator()` returns None once and for all and callers use the torch
path. `FEATMON_NATIVE=0` turns it off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from importlib import resources
from pathlib import Path

import torch

Tensor = torch.Tensor

RECORD = 8  # doubles per feature: stored, nonfinite, active, active_sum, s1, s2, min, max
_SOURCE = "sparse_accumulate.c"
_FLAGS = ["-O2", "-std=c99", "-shared", "-fPIC"]
_lock = threading.Lock()
_loaded: dict[str, SparseAccumulator | None] = {}


class SparseAccumulator:
    """Calls the compiled kernel on CPU tensors, checking every buffer it will touch."""

    def __init__(self, library: ctypes.CDLL) -> None:
        fn = library.featmon_sparse_accumulate
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        fn.argtypes = [p, p, ctypes.c_int, p, i64, i64, i64, p, ctypes.c_double, p, p]
        fn.restype = None
        self._fn = fn

    def __call__(self, table: Tensor, rows: Tensor, shift: Tensor, indices: Tensor,
                 values: Tensor, valid: Tensor, threshold: float) -> None:
        """Fold `(indices, values)` [N, k] into `table` [F + 2, 8] and `rows` [1] in place."""
        f = table.shape[0] - 2
        n, k = indices.shape
        # The C code trusts these; a wrong one would read or write outside a buffer.
        if not (table.dtype == shift.dtype == rows.dtype == torch.float64
                and table.shape == (f + 2, RECORD) and shift.shape == (f + 2,)
                and rows.shape == (1,) and values.shape == (n, k) and valid.shape == (n,)
                and valid.dtype == torch.bool and indices.dtype == torch.int64
                and values.dtype in (torch.float32, torch.float64)
                and all(t.device.type == "cpu" and t.is_contiguous()
                        for t in (table, rows, shift, indices, values, valid))):
            raise ValueError("sparse accumulator got buffers of the wrong shape, dtype or layout")
        self._fn(indices.data_ptr(), values.data_ptr(), int(values.dtype == torch.float64),
                 valid.data_ptr(), n, k, f, shift.data_ptr(), float(threshold),
                 table.data_ptr(), rows.data_ptr())


def sparse_accumulator() -> SparseAccumulator | None:
    """The compiled kernel, or None where it cannot be built here (warned about once)."""
    if os.environ.get("FEATMON_NATIVE", "1") == "0":
        return None
    with _lock:
        if _SOURCE not in _loaded:
            _loaded[_SOURCE] = _build_and_load()
        return _loaded[_SOURCE]


def _build_and_load() -> SparseAccumulator | None:
    try:
        return SparseAccumulator(ctypes.CDLL(str(build_library())))
    except Exception as exc:  # no compiler, read-only cache, exotic platform: use torch
        warnings.warn(f"featmon_widget: native sparse kernel unavailable ({exc}); "
                      "using the torch path", RuntimeWarning, stacklevel=3)
        return None


def build_library() -> Path:
    """Compile the kernel into the cache folder (once per source, compiler and flags); its
    path."""
    source = resources.files(__package__).joinpath("csrc", _SOURCE).read_bytes()
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler found (set CC)")
    key = hashlib.sha256(b"\0".join([source, compiler.encode(), " ".join(_FLAGS).encode(),
                                     platform.machine().encode(),
                                     platform.system().encode()])).hexdigest()[:16]
    cache = _cache_dir()
    target = cache / f"sparse_accumulate-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        src = Path(work) / _SOURCE
        src.write_bytes(source)
        out = Path(work) / target.name
        result = subprocess.run([compiler, *_FLAGS, "-o", str(out), str(src)],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {result.stderr.strip()[-500:]}")
        os.replace(out, target)  # atomic: a concurrent process sees all or nothing
    return target


def _cache_dir() -> Path:
    if os.environ.get("FEATMON_CACHE_DIR"):
        return Path(os.environ["FEATMON_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "featmon_widget"
