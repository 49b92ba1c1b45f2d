"""SAE encode and statistics reduction as one compiled graph.

Compiled together, the statistics become an epilogue of the encoder: the features are reduced
while they are still in cache, and the whole step can cost less than the plain eager encode.
Any SAE-like object with `encode` works; compilation failures fall back to eager encode plus the
statistics kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .compiled import CompiledStatistics, CompileOrEager
from .moments import Moments, batch_moments, shift_for

Tensor = torch.Tensor


def _encode_with_moments(
    encode: Callable[[Tensor], Tensor], x: Tensor, valid: Tensor | None, mean: Tensor,
    count: Tensor, threshold: float,
) -> tuple[Tensor, Tensor, Moments]:
    acts = encode(x)
    flat = acts.reshape(-1, acts.shape[-1])
    shift = shift_for(flat, mean, count)
    return flat, shift, batch_moments(flat, valid, shift, threshold)


class FusedEncoder:
    """Per SAE, a compiled `encode + batch_moments`; eager encode plus `statistics` otherwise."""

    def __init__(self, statistics: CompiledStatistics) -> None:
        self.statistics = statistics
        # Its own runner: a foreign encode that cannot be compiled must not switch the
        # statistics kernels to eager. Dynamo caches compiled graphs per code object and guards
        # on the SAE, so one wrapper serves every SAE and sequence length.
        self.runner = CompileOrEager(statistics.compile, "fused encode")

    def __call__(self, sae: Any, x: Tensor, valid: Tensor | None, mean: Tensor, count: Tensor,
                 threshold: float, fuse: bool = True) -> tuple[Tensor, Tensor, Moments]:
        """Features [N, d_sae] of `x` [..., d_in], the shift used, and the batch moments.

        `fuse=False` runs the SAE's own encode eagerly (foreign SAEs: their code is theirs to
        compile) and only the statistics through the statistics kernel.
        """
        with torch.no_grad():
            if not (fuse and self.runner.active):
                return self._eager(sae.encode, x, valid, mean, count, threshold)
            # One dynamic token dim: sequence lengths (even one equal to d_in, which duck sizing
            # would otherwise tie to the weights) reuse one compiled graph.
            x = x.reshape(-1, x.shape[-1])
            torch._dynamo.maybe_mark_dynamic(x, 0)
            if valid is not None:
                torch._dynamo.maybe_mark_dynamic(valid, 0)
            return self.runner.run(_encode_with_moments, self._eager, sae.encode, x, valid, mean,
                                   count, threshold)

    def _eager(self, encode: Callable[[Tensor], Tensor], x: Tensor, valid: Tensor | None,
               mean: Tensor, count: Tensor, threshold: float) -> tuple[Tensor, Tensor, Moments]:
        acts = encode(x)
        flat = acts.reshape(-1, acts.shape[-1])
        shift = shift_for(flat, mean, count)
        return flat, shift, self.statistics(flat, valid, shift, threshold)
