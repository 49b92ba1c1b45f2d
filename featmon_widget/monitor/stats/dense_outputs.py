"""Output buffers the dense statistics pass (`native.DenseMoments`) writes into, kept from one
forward to the next by their owner (`kernels.StatisticsKernels`).

Why: at 131,072 features one pass writes 8 MB of moments. Fresh tensors each forward came from
fresh pages, and the page faults and the kernel's zeroing of them cost about 2 ms a forward
(a third of a read of the activations). The owner merges the moments before its next pass, so
one set of buffers serves every forward: 64 bytes a feature (and 8 a row), reported as the
statistics' `scratch` in `state.memory_bytes`. The row maxima ([sequences, F], 12 bytes a
feature per sequence) are made fresh each call: kept, they would grow with the largest batch.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


class DenseOutputs:
    """One pass's moments, reallocated only when the shape changes: the valid rows' numbers
    [N] int64 and the three counts and five sums of `Moments` [F] (int64, float64). A call's
    results stay valid until the owner's next pass."""

    def __init__(self) -> None:
        self._shape: tuple[int, int] | None = None
        self._held: tuple[Tensor, list[Tensor], list[Tensor]] | None = None

    def take(self, n: int, f: int) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Buffers for `n` rows of `f` features."""
        if self._held is None or self._shape != (n, f):
            self._held = fresh_outputs(n, f)
            self._shape = (n, f)
        return self._held

    @property
    def nbytes(self) -> int:
        """The bytes held (0 before the first pass)."""
        if self._held is None:
            return 0
        rows, counts, sums = self._held
        return sum(t.nbytes for t in (rows, *counts, *sums))


def fresh_outputs(n: int, f: int) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """`DenseOutputs.take`'s buffers, new."""
    return (torch.empty(n, dtype=torch.int64),
            [torch.empty(f, dtype=torch.int64) for _ in range(3)],
            [torch.empty(f, dtype=torch.float64) for _ in range(5)])
