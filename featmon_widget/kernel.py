"""Runs the statistics functions compiled (one fused kernel each), falling back to eager."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .moments import (
    batch_moments,
    chunked_eager_moments,
    merge_moments_,
    sparse_update,
)
from .pending import merge_table

Tensor = torch.Tensor


class MomentsKernel:
    """Runs `batch_moments` (dense) and `sparse_moments` (TopK) compiled, falling back to eager.

    Each is compiled once with dynamic shapes, so a new sequence length does not recompile.
    If compilation fails, a warning is given once and eager operations take over (the dense one
    in cache-sized row chunks). `FEATMON_COMPILE=0` forces the eager path.
    """

    def __init__(self, compile: bool | None = None) -> None:
        if compile is None:
            compile = os.environ.get("FEATMON_COMPILE", "1") != "0"
        self.compile = compile
        self._compiled: dict[str, Callable[..., Any]] = {}
        self._failed = False
        self._lock = threading.Lock()

    @property
    def mode(self) -> str:
        """'compiled' once a compiled kernel ran, 'eager' otherwise."""
        return "compiled" if self._compiled and not self._failed else "eager"

    def __call__(
        self, acts: Tensor, valid: Tensor | None, shift: Tensor, threshold: float
    ) -> tuple[Tensor, ...]:
        """`batch_moments` of dense `acts` [N, F] (`valid` None: every row counts)."""
        # On the CPU, inductor's 512-bit code for 16-bit inputs widened to float64 spills
        # registers; 256-bit vectors ran it about twice as fast (bench: bf16 rows).
        narrow = acts.device.type == "cpu" and acts.dtype != torch.float32
        options = {"cpp.simdlen": 256} if narrow else None
        return self._run(batch_moments, chunked_eager_moments, acts, valid, shift, threshold,
                         variant="simd256" if narrow else "", options=options)

    def sparse_update(self, state: tuple[Tensor, ...], indices: Tensor, values: Tensor,
                      valid: Tensor, threshold: float) -> tuple[tuple[Tensor, ...], Tensor]:
        """`sparse_update`: new running totals from top-k features, one compiled graph."""
        return self._run(sparse_update, sparse_update, state, indices, values, valid, threshold)

    def merge(self, state: tuple[Tensor, ...], shift: Tensor, moments: tuple[Tensor, ...]) -> None:
        """`merge_moments_` (in place), one fused kernel when compiled (a dozen [F] passes
        otherwise)."""
        self._run(merge_moments_, merge_moments_, state, shift, moments)

    def merge_table(self, state: tuple[Tensor, ...], table: Tensor, rows: Tensor, shift: Tensor,
                    zero_is_active: bool) -> Tensor:
        """`pending.merge_table`: a CPU table of TopK records merged into the totals in place;
        returns the count of dropped indices."""
        return self._run(merge_table, merge_table, state, table, rows, shift, zero_is_active)

    def _run(self, fn: Callable[..., Any], eager: Callable[..., Any], *args: object,
             variant: str = "", options: dict[str, Any] | None = None) -> Any:
        if self.compile and not self._failed:
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
                warnings.warn(
                    f"featmon_widget: compiled statistics unavailable ({exc!r}); "
                    "using the eager path",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return eager(*args)
