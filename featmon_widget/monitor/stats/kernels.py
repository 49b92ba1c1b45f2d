"""Which kernel runs each statistics update: the native C kernel for dense CPU input, a
`torch.compile`d graph elsewhere (GPU, and every merge), eager operations when neither works.

On the CPU the dense reduction runs down the rows, a feature row apart; inductor's code for it
walks that stride column block by column block and runs at memory latency on CPUs whose
prefetchers stop at page boundaries (7-15x a read on an Intel Xeon). The native kernel streams
rows in column tiles instead (`csrc/dense_moments.c`). On a GPU the compiled graph is fine.
"""

from __future__ import annotations

import torch

from .backend import Backend
from .moments import (
    Moments,
    Totals,
    batch_moments,
    chunked_eager_moments,
    merge_moments_,
    shift_for,
    sparse_update,
)
from .native import RowMaxima
from .rider import StatisticsRider

Tensor = torch.Tensor


class StatisticsKernels:
    """The statistics updates, each one fused kernel: `batch_moments` (dense; native C on the
    CPU), `sparse_update` (TopK), and the in-place merges into the running totals.

    Which runs is the `backend`'s choice (the monitor's; without one, a backend made from
    `compile` and `native`): `native=False` (or `FEATMON_NATIVE=0`, or no C compiler) keeps
    the dense CPU update on the compiled graph; `compile=False` (or `FEATMON_COMPILE=0`) uses
    eager operations (the dense reduction in cache-sized row chunks) wherever the native kernel
    does not run.
    """

    def __init__(self, compile: bool | None = None, native: bool | None = None, *,
                 backend: Backend | None = None) -> None:
        self.backend = backend if backend is not None else Backend(native, compile)
        self.runner = self.backend.runner
        self._native_ran = False

    @property
    def compile(self) -> bool:
        """Whether compiling was asked for (see `FEATMON_COMPILE`)."""
        return self.backend.compile

    @property
    def mode(self) -> str:
        """How the last dense updates ran: 'native', 'compiled' or 'eager'."""
        return "native" if self._native_ran else self.runner.mode

    def __call__(self, acts: Tensor, valid: Tensor | None, shift: Tensor,
                 threshold: float, rider: StatisticsRider | None = None) -> Moments:
        """`batch_moments` of dense `acts` [N, F] (`valid` None: every row counts); where the
        native kernel runs, what `rider` asks is counted in the same pass."""
        native = self.backend.dense_moments(acts)
        if native is not None:
            self._native_ran = True
            moments = native(acts.contiguous(), None if valid is None else valid.contiguous(),
                             shift.contiguous(), threshold, rider)
            assert moments is not None  # no totals given: the moments come back
            return moments
        # On the CPU, inductor's 512-bit code for 16-bit inputs widened to float64 spills
        # registers; 256-bit vectors ran it about twice as fast.
        narrow = acts.device.type == "cpu" and acts.dtype != torch.float32
        options = {"cpp.simdlen": 256} if narrow else None
        return self.runner.run(batch_moments, chunked_eager_moments, acts, valid, shift,
                               threshold, variant="simd256" if narrow else "", options=options)

    def with_row_maxima(self, acts: Tensor, valid: Tensor | None, shift: Tensor,
                        threshold: float, tokens: int | None,
                        rider: StatisticsRider | None = None
                        ) -> tuple[Moments, RowMaxima | None]:
        """The moments of `acts` [N, F], and where the native kernel runs, in the same pass
        the row maxima of its sequences of `tokens` rows (see `DenseMoments.with_row_maxima`;
        None elsewhere, and for `tokens` None: the caller computes them) and what `rider`
        asks."""
        native = self.backend.dense_moments(acts)
        if native is None:
            return self(acts, valid, shift, threshold), None
        self._native_ran = True
        moments, maxima = native.with_row_maxima(
            acts.contiguous(), None if valid is None else valid.contiguous(),
            shift.contiguous(), threshold, tokens, rider=rider)
        assert moments is not None  # no totals given: the moments come back
        return moments, maxima

    def update(self, totals: Totals, acts: Tensor, valid: Tensor | None, threshold: float,
               tokens: int | None = None, rider: StatisticsRider | None = None
               ) -> RowMaxima | None:
        """Fold dense `acts` [N, F] into the running `totals` in place. Where the native
        kernel runs, one pass takes the shift (`shift_for`), merges tile by tile, gives the
        row maxima of sequences of `tokens` rows and counts what `rider` asks; elsewhere the
        moments are reduced and merged (two compiled graphs: as one, inductor's CPU code for
        the reduction became about 9x slower), and the row maxima are None."""
        native = self.backend.dense_moments(acts)
        if native is None:
            shift = shift_for(acts, totals.mean, totals.count, valid)
            self.merge(totals, shift, self(acts, valid, shift, threshold))
            return None
        self._native_ran = True
        return native.with_row_maxima(acts.contiguous(),
                                      None if valid is None else valid.contiguous(), None,
                                      threshold, tokens, rider=rider, into=totals)[1]

    def activate(self, pre: Tensor, jump: Tensor, valid: Tensor | None, shift: Tensor | None,
                 threshold: float, tokens: int | None, rider: StatisticsRider | None = None,
                 into: Totals | None = None
                 ) -> tuple[Moments | None, RowMaxima | None] | None:
        """Where the native kernel runs (float32 on the CPU): `pre` [N, F] (an SAE's
        pre-activations, contiguous) overwritten in place with `relu(pre) * (pre > jump)`, and
        its moments (and row maxima with `tokens`, and what `rider` asks) from the same pass;
        with `into` merged into those totals (None in the moments' place; `shift` may be
        None: the pass takes it). None elsewhere (nothing is touched): the caller activates
        and reduces itself."""
        native = self.backend.dense_activation(pre)
        if native is None:
            return None
        self._native_ran = True
        return native.with_row_maxima(pre, None if valid is None else valid.contiguous(),
                                      None if shift is None else shift.contiguous(),
                                      threshold, tokens,
                                      jump.to(torch.float32).contiguous(), rider, into)

    def sparse_update(self, state: Totals, indices: Tensor, values: Tensor, valid: Tensor,
                      threshold: float) -> tuple[Totals, Tensor]:
        """`sparse_update`: new running totals from top-k features, one compiled graph."""
        return self.runner.run(sparse_update, sparse_update, state, indices, values, valid,
                               threshold)

    def merge(self, state: Totals, shift: Tensor, moments: Moments) -> None:
        """`merge_moments_` (in place), one fused kernel when compiled (a dozen [F] passes
        otherwise)."""
        self.runner.run(merge_moments_, merge_moments_, state, shift, moments)

