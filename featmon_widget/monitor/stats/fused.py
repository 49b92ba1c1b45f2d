"""SAE encode and statistics reduction, compiled.

On a GPU the two are one compiled graph: the statistics become an epilogue of the encoder, the
features are reduced while they are still in cache, and the whole step can cost less than the
plain eager encode. On the CPU inductor's reduction epilogue walks the features column block by
column block, which runs at memory latency on some CPUs (see `kernels`), so there the native
statistics kernel is the epilogue: for our own float32 ReLU / JumpReLU SAEs it takes the
pre-activations of one GEMM and applies the activation in place while it reduces (no separate
activation pass); for other SAEs the encode is compiled alone and the kernel reduces its
output. Any SAE-like object with `encode` works; compilation failures fall back to eager encode
plus the statistics kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from ...sae.adapter import jump_thresholds
from .compiled import CompileOrEager
from .kernels import StatisticsKernels
from .moments import Moments, Totals, batch_moments, first_row, shift_for
from .native import RowMaxima
from .rider import StatisticsRider

Tensor = torch.Tensor


def _encode_flat(encode: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    acts = encode(x)
    return acts.reshape(-1, acts.shape[-1])


def _encode_with_moments(
    encode: Callable[[Tensor], Tensor], x: Tensor, valid: Tensor | None, mean: Tensor,
    count: Tensor, threshold: float,
) -> tuple[Tensor, Tensor, Moments]:
    acts = encode(x)
    flat = acts.reshape(-1, acts.shape[-1])
    shift = shift_for(flat, mean, count, valid)
    return flat, shift, batch_moments(flat, valid, shift, threshold)


class Encoded(NamedTuple):
    """One encoded batch: its features [N, d_sae], the per-feature shift its moments were taken
    against and the moments (both None: merged into the totals given already), and the row
    maxima of its sequences when they were asked for and the statistics pass could give them
    (else None)."""

    features: Tensor
    shift: Tensor | None
    moments: Moments | None
    maxima: RowMaxima | None


class FusedEncoder:
    """Per SAE, a compiled encode with its statistics (see module doc); eager encode plus
    `statistics` otherwise."""

    def __init__(self, statistics: StatisticsKernels) -> None:
        self.statistics = statistics
        # Its own runner: a foreign encode that cannot be compiled must not switch the
        # statistics kernels to eager. Dynamo caches compiled graphs per code object and guards
        # on the SAE, so one wrapper serves every SAE and sequence length.
        self.runner = CompileOrEager(statistics.backend.compile, "fused encode")

    def __call__(self, sae: Any, x: Tensor, valid: Tensor | None, mean: Tensor, count: Tensor,
                 threshold: float, fuse: bool = True, tokens: int | None = None,
                 rider: StatisticsRider | None = None, into: Totals | None = None) -> Encoded:
        """Features [N, d_sae] of `x` [..., d_in] with their shift and moments, and with
        `tokens` the row maxima of sequences of that many rows where the statistics pass can
        give them; where the native statistics pass runs, it counts what `rider` asks, and
        merges the moments into `into` (the running totals `mean` and `count` come from) as it
        goes: `Encoded.moments` is None then.

        `fuse=False` runs the SAE's own encode eagerly (foreign SAEs: their code is theirs to
        compile) and only the statistics through the statistics kernel.
        """
        rows = x.numel() // x.shape[-1] if x.dim() and x.shape[-1] else None
        with torch.no_grad():
            if not (fuse and self.runner.active):
                return self._reduce(_encode_flat(sae.encode, x), valid, mean, count, threshold,
                                    tokens, rider, into, rows)
            if x.shape[-1] != sae.d_in:  # bad input, not a compiler failure: raise here
                raise ValueError(f"SAE {sae.name!r} expects inputs [..., {sae.d_in}], got "
                                 f"{tuple(x.shape)}")
            # One dynamic token dim: sequence lengths (even one equal to d_in, which duck sizing
            # would otherwise tie to the weights) reuse one compiled graph.
            x = x.reshape(-1, x.shape[-1])
            activated = self._activate_natively(sae, x, valid, mean, count, threshold, tokens,
                                                rider, into)
            if activated is not None:
                return activated
            torch._dynamo.maybe_mark_dynamic(x, 0)
            # The C statistics kernel will reduce the output: compile the encode alone.
            if self.statistics.backend.dense_moments(x) is not None:
                flat = self.runner.run(_encode_flat, _encode_flat, sae.encode, x)
                return self._reduce(flat, valid, mean, count, threshold, tokens, rider, into,
                                    rows)
            if valid is not None:
                torch._dynamo.maybe_mark_dynamic(valid, 0)
            return Encoded(*self.runner.run(_encode_with_moments, self._eager, sae.encode, x,
                                            valid, mean, count, threshold), None)

    def _activate_natively(self, sae: Any, x: Tensor, valid: Tensor | None, mean: Tensor,
                           count: Tensor, threshold: float, tokens: int | None,
                           rider: StatisticsRider | None, into: Totals | None
                           ) -> Encoded | None:
        """Our float32 ReLU / JumpReLU SAE on the CPU: one GEMM for the pre-activations, then
        the statistics kernel activates them in place as it reduces. None where it cannot."""
        if self.statistics.backend.dense_moments(x) is None:
            return None
        jump = jump_thresholds(sae)
        if jump is None:
            return None
        pre = sae.pre_activations(x)
        # Never-seen features are shifted by the first counted row's features (see shift_for;
        # merging into the totals, the pass takes it itself).
        shift = None if into is not None else shift_for(sae.activation(first_row(pre, valid)),
                                                         mean, count)
        done = self.statistics.activate(pre, jump, valid, shift, threshold, tokens, rider,
                                        into)
        if done is None:
            return None
        return Encoded(pre, shift, *done)

    def _reduce(self, flat: Tensor, valid: Tensor | None, mean: Tensor, count: Tensor,
                threshold: float, tokens: int | None, rider: StatisticsRider | None = None,
                into: Totals | None = None, rows: int | None = None) -> Encoded:
        rows = valid.shape[0] if valid is not None else rows
        # Checked before the pass: with `into` it merges, and a failed batch changes nothing.
        if rows is not None and flat.shape[0] != rows:
            raise ValueError(f"the SAE's encode gave {flat.shape[0]} rows of features for "
                             f"{rows} input rows")
        if into is not None and flat.shape[1] != mean.shape[0]:
            raise ValueError(f"the SAE's encode gave {flat.shape[1]} features a token; the "
                             f"monitor has {mean.shape[0]}")
        if tokens is not None and flat.shape[0] % tokens:
            raise ValueError(f"the SAE's encode gave {flat.shape[0]} rows of features for "
                             f"sequences of {tokens} tokens")
        if into is not None:
            maxima = self.statistics.update(into, flat, valid, threshold, tokens, rider)
            return Encoded(flat, None, None, maxima)
        shift = shift_for(flat, mean, count, valid)
        return Encoded(flat, shift, *self.statistics.with_row_maxima(flat, valid, shift,
                                                                     threshold, tokens, rider))

    def _eager(self, encode: Callable[[Tensor], Tensor], x: Tensor, valid: Tensor | None,
               mean: Tensor, count: Tensor, threshold: float) -> tuple[Tensor, Tensor, Moments]:
        return self._reduce(_encode_flat(encode, x), valid, mean, count, threshold, None)[:3]
