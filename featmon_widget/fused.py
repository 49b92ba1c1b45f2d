"""SAE encode and statistics reduction as one compiled graph.

Compiled together, the statistics become an epilogue of the encoder: the features are reduced
while they are still in cache, and the whole step can cost less than the plain eager encode.
Any SAE-like object with `encode` works; compilation failures fall back to eager encode plus the
statistics kernel.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from .kernel import MomentsKernel
from .moments import batch_moments, shift_for

Tensor = torch.Tensor


def _encode_with_moments(
    encode: Callable[[Tensor], Tensor], x: Tensor, valid: Tensor | None, mean: Tensor,
    count: Tensor, threshold: float,
) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    acts = encode(x)
    flat = acts.reshape(-1, acts.shape[-1])
    shift = shift_for(flat, mean, count)
    return flat, shift, batch_moments(flat, valid, shift, threshold)


class FusedEncoder:
    """Per SAE, a compiled `encode + batch_moments`; eager encode plus `kernel` otherwise."""

    def __init__(self, kernel: MomentsKernel) -> None:
        self.kernel = kernel
        # Dynamo caches compiled graphs per code object and guards on the SAE, so one wrapper
        # serves every SAE and sequence length. Built on first use: importing the compiler
        # costs seconds.
        self._compiled: Callable[..., Any] | None = None
        self._failed = False

    def __call__(self, sae: Any, x: Tensor, valid: Tensor | None, mean: Tensor, count: Tensor,
                 threshold: float, fuse: bool = True) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """Features [N, d_sae] of `x` [..., d_in], the shift used, and the batch moments.

        `fuse=False` runs the SAE's own encode eagerly (foreign SAEs: their code is theirs to
        compile) and only the statistics through the kernel.
        """
        if fuse and self.kernel.compile and not self._failed:
            # One dynamic token dim: sequence lengths (even one equal to d_in, which duck sizing
            # would otherwise tie to the weights) reuse one compiled graph.
            x = x.reshape(-1, x.shape[-1])
            torch._dynamo.maybe_mark_dynamic(x, 0)
            if valid is not None:
                torch._dynamo.maybe_mark_dynamic(valid, 0)
            try:
                if self._compiled is None:
                    self._compiled = torch.compile(_encode_with_moments, dynamic=True)
                with torch.no_grad():
                    return self._compiled(sae.encode, x, valid, mean, count, threshold)
            except Exception as exc:  # fall back rather than lose the user's data
                self._failed = True
                warnings.warn(f"featmon_widget: fused encode unavailable ({exc!r}); "
                              "using eager encode", RuntimeWarning, stacklevel=2)
        with torch.no_grad():
            acts = sae.encode(x)
        flat = acts.reshape(-1, acts.shape[-1])
        shift = shift_for(flat, mean, count)
        return flat, shift, self.kernel(flat, valid, shift, threshold)
