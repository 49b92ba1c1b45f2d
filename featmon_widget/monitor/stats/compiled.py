"""Running the statistics functions compiled with `torch.compile`, and eagerly where that fails.

`CompileOrEager` is the one place that decides: each function is compiled once with dynamic
shapes (a new sequence length does not recompile); if compiling or running a compiled function
fails, a warning is given once and the eager version takes over for good. `compile=False` (the
monitor's `Backend` resolves `FEATMON_COMPILE`) forces the eager path.
`kernels.StatisticsKernels` runs the statistics updates through it.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch

Tensor = torch.Tensor


class CompileOrEager:
    """Calls functions compiled (cached per function and variant) until one fails, eagerly
    after that. `what` names the compiled work in the fallback warning."""

    def __init__(self, compile: bool, what: str) -> None:
        self.compile = bool(compile)
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
