"""Output buffers the dense statistics pass (`native.DenseMoments`) writes into, kept from one
forward to the next by their owner (`kernels.StatisticsKernels`).

Why: at 131,072 features one pass writes 8 MB of moments. Fresh tensors each forward came from
fresh pages, and the page faults and the kernel's zeroing of them cost about 2 ms a forward
(a third of a read of the activations). The owner merges the moments before its next pass, so
one set of buffers serves every forward; a caller without an owner gets fresh tensors.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


class DenseOutputs:
    """One pass's outputs, reallocated only when the shape changes: the valid rows' numbers
    [N] int64, the three counts and five sums of `Moments` [F] (int64, float64) and, with row
    maxima, each sequence's best value [B, F] float32 and its token [B, F] int64. A call's
    results stay valid until the owner's next pass."""

    def __init__(self) -> None:
        self._shape: tuple[int, int, int] | None = None
        self._held: tuple[Tensor, list[Tensor], list[Tensor], Tensor, Tensor] | None = None

    def take(self, n: int, f: int, batch: int
             ) -> tuple[Tensor, list[Tensor], list[Tensor], Tensor, Tensor]:
        """Buffers for `n` rows of `f` features in `batch` sequences (0: no row maxima)."""
        if self._held is None or self._shape != (n, f, batch):
            self._held = fresh_outputs(n, f, batch)
            self._shape = (n, f, batch)
        return self._held

    @property
    def nbytes(self) -> int:
        """The bytes held (0 before the first pass)."""
        if self._held is None:
            return 0
        rows, counts, sums, best, token = self._held
        return sum(t.nbytes for t in (rows, *counts, *sums, best, token))


def fresh_outputs(n: int, f: int, batch: int
                  ) -> tuple[Tensor, list[Tensor], list[Tensor], Tensor, Tensor]:
    """`DenseOutputs.take`'s buffers, new."""
    return (torch.empty(n, dtype=torch.int64),
            [torch.empty(f, dtype=torch.int64) for _ in range(3)],
            [torch.empty(f, dtype=torch.float64) for _ in range(5)],
            torch.empty(batch, f, dtype=torch.float32),
            torch.empty(batch, f, dtype=torch.int64))
