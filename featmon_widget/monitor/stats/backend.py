"""Which implementation runs each kernel: the C kernel, compiled torch, or eager torch.

A monitor owns one `Backend`. It reads its two switches once, when it is made: `native`
(None: the `FEATMON_NATIVE` environment variable, default on) and `compile` (None:
`FEATMON_COMPILE`, default on). For every operation with a C kernel it alone decides, from the
tensors' device, dtype and layout, whether the kernel takes the call: its methods hand out the
kernel, or None, and the caller then runs its torch path (`runner`, compiled or eager). With
`native=False` no C kernel runs anywhere. The decisions are a few attribute checks; no
environment read or lock is on the hot path.

Adding a kernel is one entry in `KERNELS`: the C source (in `csrc/`, including the generated
`featmon_protocol.h`), the wrapper class that declares its C functions (`C_FUNCTIONS`) and
checks its buffers, what it is called in warnings, and its compiler flags; and the method here
that says which inputs it takes. Libraries are built and loaded once per process (`load_kernel`,
where a failure is warned about once and remembered); whether a backend uses them is its own.
"""

from __future__ import annotations

import ctypes
import os
import threading
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from .compiled import CompileOrEager
from .library import DEFAULT_FLAGS, DENSE_FLAGS, OPENMP, SCAN_FLAGS, VECTOR_FLAGS, build_library
from .moments import Totals
from .native import CoFiringKernel, DenseMoments, ExampleKernels, RowTopK, SparseAccumulator
from .protocol import DENSE_DTYPES, EXAMPLE_KINDS, METRIC_CODES, bind, render_header
from .scans import FeatureScans

Tensor = torch.Tensor


def native_enabled(native: bool | None) -> bool:
    """`native`, or when None whether `FEATMON_NATIVE` allows the C kernels (default yes)."""
    if native is None:
        return os.environ.get("FEATMON_NATIVE", "1") != "0"
    return bool(native)


def compile_enabled(compile: bool | None) -> bool:
    """`compile`, or when None whether `FEATMON_COMPILE` allows compiling (default yes)."""
    if compile is None:
        return os.environ.get("FEATMON_COMPILE", "1") != "0"
    return bool(compile)


class KernelSpec(NamedTuple):
    """One C kernel: its source in `csrc/`, the wrapper made from its loaded functions (the
    wrapper's `C_FUNCTIONS`), its name in warnings, and its compiler flags (first choice
    first: a compiler that refuses one set gets the next)."""

    source: str
    wrapper: type
    what: str
    flags: Sequence[Sequence[str]] = (DEFAULT_FLAGS,)


KERNELS: dict[str, KernelSpec] = {
    "dense": KernelSpec("dense_moments.c", DenseMoments, "native statistics kernel",
                        ((*DENSE_FLAGS, OPENMP), DENSE_FLAGS)),
    "row_topk": KernelSpec("row_topk.c", RowTopK, "native top-k kernel",
                           ((*VECTOR_FLAGS, OPENMP), VECTOR_FLAGS)),
    "sparse": KernelSpec("sparse_accumulate.c", SparseAccumulator, "native sparse kernel"),
    "examples": KernelSpec("examples.c", ExampleKernels, "native example kernels",
                           ((*VECTOR_FLAGS, OPENMP), VECTOR_FLAGS)),
    "scans": KernelSpec("feature_scans.c", FeatureScans, "native feature scans", (SCAN_FLAGS,)),
    "cofiring": KernelSpec("cofiring.c", CoFiringKernel, "native co-firing kernel",
                           ((*VECTOR_FLAGS, OPENMP), VECTOR_FLAGS)),
}

_lock = threading.Lock()
_loaded: dict[str, Any] = {}  # per source: its wrapper, or None where it cannot be built


def load_kernel(spec: KernelSpec) -> Any:
    """The wrapper around `spec`'s compiled library, built once per process; None (warned about
    once) where it cannot be built here."""
    with _lock:
        if spec.source not in _loaded:
            try:
                library = ctypes.CDLL(str(build_library(spec.source, spec.flags)))
                _loaded[spec.source] = spec.wrapper(bind(library, spec.wrapper.C_FUNCTIONS))
            except Exception as exc:  # no compiler, read-only cache, exotic platform: torch
                warnings.warn(f"featmon_widget: {spec.what} unavailable ({exc}); using the "
                              "torch path", RuntimeWarning, stacklevel=4)
                _loaded[spec.source] = None
        return _loaded[spec.source]


def protocol_header() -> str:
    """The text of `csrc/featmon_protocol.h` for the kernels in `KERNELS`."""
    return render_header((spec.source, spec.wrapper.C_FUNCTIONS) for spec in KERNELS.values())


class Backend:
    """A monitor's choice of implementation for every kernel (see module doc)."""

    def __init__(self, native: bool | None = None, compile: bool | None = None) -> None:
        self.native = native_enabled(native)
        self.compile = compile_enabled(compile)
        # The statistics' and the examples' torch functions share one runner: a toolchain that
        # fails once is not tried again by the next kind of update.
        self.runner = CompileOrEager(self.compile, "compiled statistics")
        self._kernels: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Backend(native={self.native}, compile={self.compile})"

    def kernel(self, name: str) -> Any:
        """The C kernel `name` (of `KERNELS`), or None: native is off, or it cannot be built
        here. Loaded on first use."""
        try:
            return self._kernels[name]
        except KeyError:
            kernel = load_kernel(KERNELS[name]) if self.native else None
            self._kernels[name] = kernel
            return kernel

    def available(self) -> dict[str, bool]:
        """Per kernel, whether this backend runs it where the inputs fit (builds them all)."""
        return {name: self.kernel(name) is not None for name in KERNELS}

    # ---- the decisions: a kernel when it takes these inputs, else None (the torch path) ----

    def dense_moments(self, acts: Tensor) -> DenseMoments | None:
        """The dense statistics kernel for `acts` [N, F]: CPU float32 / bfloat16 / float16
        (any layout: the caller passes it contiguous)."""
        if acts.device.type != "cpu" or acts.dtype not in DENSE_DTYPES:
            return None
        return self.kernel("dense")

    def dense_activation(self, pre: Tensor) -> DenseMoments | None:
        """The dense statistics kernel applying an SAE's activation to `pre` [N, F] in place as
        it reduces: CPU float32, contiguous (it is written)."""
        if pre.device.type != "cpu" or pre.dtype != torch.float32 or not pre.is_contiguous():
            return None
        return self.kernel("dense")

    def native_statistics(self, device: torch.device) -> bool:
        """Whether the dense statistics pass on `device` is the C kernel, which can also count
        what a `StatisticsRider` asks."""
        return device.type == "cpu" and self.kernel("dense") is not None

    def statistics_row_maxima(self, device: torch.device) -> bool:
        """Whether the dense statistics pass on `device` can give the examples their row
        maxima (the C kernel runs there)."""
        return self.native_statistics(device)

    def row_topk(self, acts: Tensor, k: int) -> RowTopK | None:
        """The per-row top-k kernel for `acts` [R, F]: CPU float32 or bfloat16, k <= F."""
        if (acts.device.type != "cpu" or acts.dtype not in (torch.float32, torch.bfloat16)
                or k > acts.shape[1]):
            return None
        return self.kernel("row_topk")

    def sparse(self, device: torch.device) -> SparseAccumulator | None:
        """The TopK kernels (accumulate into a table, merge it, drop repeats) for tensors on
        `device`: the CPU."""
        return self.kernel("sparse") if device.type == "cpu" else None

    def cofiring(self, acts: Tensor, selected: int) -> CoFiringKernel | None:
        """The co-firing kernel for dense `acts` [N, F] and `selected` features: CPU float32
        / bfloat16 (the caller passes it contiguous)."""
        if (acts.device.type != "cpu" or acts.dtype not in (torch.float32, torch.bfloat16)
                or selected > CoFiringKernel.MAX_SELECTED):
            return None
        return self.kernel("cofiring")

    def example_merge(self, device: torch.device) -> ExampleKernels | None:
        """The example merge kernels for a table on `device`: the CPU."""
        return self.kernel("examples") if device.type == "cpu" else None

    def example_row_max(self, acts: Tensor) -> ExampleKernels | None:
        """The row-maxima kernel for dense `acts` [rows, tokens, F]: CPU float32 / bfloat16."""
        if acts.device.type != "cpu" or acts.dtype not in EXAMPLE_KINDS:
            return None
        return self.kernel("examples")

    def sample(self, device: torch.device) -> ExampleKernels | None:
        """The kernels of the sample of activating tokens for a table on `device`: the CPU
        (dense float32 / bfloat16 or TopK float32 input; the caller converts)."""
        return self.kernel("examples") if device.type == "cpu" else None

    def top_k(self, values: Tensor, k: int) -> FeatureScans | None:
        """The top-k scan for `values` [n]: CPU float64, contiguous, where the heap pays (k
        below a quarter of n; above, a plain stable sort is as cheap)."""
        if (values.device.type != "cpu" or values.dtype != torch.float64
                or not values.is_contiguous() or not values.shape[0] > 4 * k > 0):
            return None
        return self.kernel("scans")

    def top_k_metric(self, totals: Totals, metric: str, k: int) -> FeatureScans | None:
        """The top-k scan computing `metric` from `totals` as it goes: CPU, contiguous, a
        metric the scan knows, and where the heap pays (see `top_k`)."""
        count = totals.count
        if (count.device.type != "cpu" or not count.shape[0] > 4 * k > 0
                or metric not in METRIC_CODES or not all(t.is_contiguous() for t in totals)):
            return None
        return self.kernel("scans")

    def firing_summary(self, active_count: Tensor, count: Tensor) -> FeatureScans | None:
        """The firing-summary scan for the counts [F]: CPU, contiguous."""
        if (count.device.type != "cpu" or not count.is_contiguous()
                or not active_count.is_contiguous()):
            return None
        return self.kernel("scans")
