"""Running the statistics functions compiled with `torch.compile`, and eagerly where that fails.

`CompileOrEager` is the one place that decides: each function is compiled once with dynamic
shapes (a new sequence length does not recompile); if compiling or running a compiled function
fails, a warning is given once and the eager version takes over for good. `FEATMON_COMPILE=0`
forces the eager path. `CompiledStatistics` runs the statistics updates through it.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .moments import (
    Moments,
    Totals,
    batch_moments,
    chunked_eager_moments,
    merge_moments_,
    sparse_update,
)
from .pending import merge_table

Tensor = torch.Tensor


def compile_enabled(compile: bool | None) -> bool:
    """`compile`, or when None whether `FEATMON_COMPILE` allows compiling (default yes)."""
    if compile is None:
        return os.environ.get("FEATMON_COMPILE", "1") != "0"
    return compile


class CompileOrEager:
    """Calls functions compiled (cached per function and variant) until one fails, eagerly
    after that. `what` names the compiled work in the fallback warning."""

    def __init__(self, compile: bool | None, what: str) -> None:
        self.compile = compile_enabled(compile)
        self.what = what
        self._compiled: dict[str, Callable[..., Any]] = {}
        self._failed = False
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Whether calls still go to compiled functions."""
        return self.compile and not self._failed

    @property
    def mode(self) -> str:
        """'compiled' once a compiled function ran, 'eager' otherwise."""
        return "compiled" if self._compiled and not self._failed else "eager"

    def run(self, fn: Callable[..., Any], eager: Callable[..., Any], *args: object,
            variant: str = "", options: dict[str, Any] | None = None) -> Any:
        """`fn(*args)` compiled (with inductor `options`), or `eager(*args)`."""
        if self.active:
            try:
                with self._lock:
                    key = f"{fn.__name__}:{variant}"
                    compiled = self._compiled.get(key)
                    if compiled is None:
                        compiled = self._compiled[key] = torch.compile(fn, dynamic=True,
                                                                       options=options)
                return compiled(*args)
            except Exception as exc:  # a broken toolchain must not cost the user their data
                self._failed = True
                warnings.warn(f"featmon_widget: {self.what} unavailable ({exc!r}); "
                              "using the eager path", RuntimeWarning, stacklevel=3)
        return eager(*args)


class CompiledStatistics:
    """The statistics updates, each one fused kernel when compiled: `batch_moments` (dense),
    `sparse_update` (TopK), and the in-place merges into the running totals.

    If compilation fails the eager operations take over (the dense reduction in cache-sized row
    chunks).
    """

    def __init__(self, compile: bool | None = None) -> None:
        self.runner = CompileOrEager(compile, "compiled statistics")

    @property
    def compile(self) -> bool:
        """Whether compiling was asked for (see `FEATMON_COMPILE`)."""
        return self.runner.compile

    @property
    def mode(self) -> str:
        """'compiled' once a compiled kernel ran, 'eager' otherwise."""
        return self.runner.mode

    def __call__(self, acts: Tensor, valid: Tensor | None, shift: Tensor,
                 threshold: float) -> Moments:
        """`batch_moments` of dense `acts` [N, F] (`valid` None: every row counts)."""
        # On the CPU, inductor's 512-bit code for 16-bit inputs widened to float64 spills
        # registers; 256-bit vectors ran it about twice as fast (bench: bf16 rows).
        narrow = acts.device.type == "cpu" and acts.dtype != torch.float32
        options = {"cpp.simdlen": 256} if narrow else None
        return self.runner.run(batch_moments, chunked_eager_moments, acts, valid, shift,
                               threshold, variant="simd256" if narrow else "", options=options)

    def sparse_update(self, state: Totals, indices: Tensor, values: Tensor, valid: Tensor,
                      threshold: float) -> tuple[Totals, Tensor]:
        """`sparse_update`: new running totals from top-k features, one compiled graph."""
        return self.runner.run(sparse_update, sparse_update, state, indices, values, valid,
                               threshold)

    def merge(self, state: Totals, shift: Tensor, moments: Moments) -> None:
        """`merge_moments_` (in place), one fused kernel when compiled (a dozen [F] passes
        otherwise)."""
        self.runner.run(merge_moments_, merge_moments_, state, shift, moments)

    def merge_table(self, state: Totals, table: Tensor, rows: Tensor, shift: Tensor,
                    zero_is_active: bool) -> Tensor:
        """`pending.merge_table`: a CPU table of TopK records merged into the totals in place;
        returns the count of dropped indices."""
        return self.runner.run(merge_table, merge_table, state, table, rows, shift,
                               zero_is_active)
