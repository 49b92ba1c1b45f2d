"""One forward pass's features, dense `[N, d_sae]` or sparse top-k `(indices, values)`.

The history and the value histograms only need a few columns and each token's strongest
features; both forms answer those without the other's cost (a TopK SAE never materialises its
dense output on the monitor's path).
"""

from __future__ import annotations

import torch

from ..stats.backend import Backend

Tensor = torch.Tensor


class DenseFeatures:
    """Features as a dense `[N, d_sae]` tensor; `backend` (the monitor's; None: torch only)
    decides where the C top-k kernel reads them."""

    def __init__(self, acts: Tensor, backend: Backend | None = None) -> None:
        self.acts = acts
        self.backend = backend

    @property
    def n(self) -> int:
        """Number of rows (tokens)."""
        return self.acts.shape[0]

    def rows(self, pick: Tensor) -> DenseFeatures:
        """The rows at `pick`."""
        return DenseFeatures(self.acts.index_select(0, pick), self.backend)

    def top(self, k: int) -> tuple[Tensor, Tensor]:
        """Each row's k strongest features: (indices int32 [N, k], values float32 [N, k])."""
        values, indices = torch.topk(self.acts.float(), k, dim=1)
        return indices.to(torch.int32), values

    def columns(self, index: Tensor) -> Tensor:
        """Values of the features `index` [E] per row, float32 [N, E]."""
        return self.acts.index_select(1, index).float()

    def top_of(self, pick: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """`rows(pick).top(k)`; where the backend runs the C kernel (CPU float32) one ordered
        read of the picked rows, with ties to the lower index, and no copy of them."""
        native = None if self.backend is None else self.backend.row_topk(self.acts, k)
        if native is not None:
            return native(self.acts.contiguous(), pick.contiguous(), k)
        return self.rows(pick).top(k)

    def columns_of(self, pick: Tensor, index: Tensor) -> Tensor:
        """`rows(pick).columns(index)`, gathering only those values."""
        return self.acts[pick[:, None], index[None, :]].float()


class RepeatFilter:
    """Makes TopK indices distinct within each row: every repeat of a feature after its first
    occurrence becomes -1, which every path ignores and counts as a dropped index (a row naming
    a feature twice has no dense meaning). No host read: a C pass with per-feature stamps kept
    between calls where `backend` runs it (the CPU), a row sort elsewhere (and without a
    backend). Callers serialize calls (the monitor's lock)."""

    def __init__(self, d_sae: int, backend: Backend | None = None) -> None:
        self.d_sae = d_sae
        self.backend = backend
        self._stamps: Tensor | None = None  # made on first native use
        self._marks = 0

    def __call__(self, indices: Tensor) -> Tensor:
        """`indices` [N, k] as a new int64 tensor without repeats (see class doc)."""
        native = None if self.backend is None else self.backend.sparse(indices.device)
        if native is not None:
            if self._stamps is None:
                self._stamps = torch.zeros(self.d_sae, dtype=torch.int64)
            out = native.drop_repeats(indices, self._stamps, self._marks)
            self._marks += indices.shape[0]
            return out
        indices = indices.to(torch.int64)
        if indices.shape[1] < 2:
            return indices.clone()
        ordered, order = indices.sort(dim=1, stable=True)
        repeat = torch.zeros_like(indices, dtype=torch.bool)
        repeat.scatter_(1, order[:, 1:], ordered[:, 1:] == ordered[:, :-1])
        in_range = (indices >= 0) & (indices < self.d_sae)  # the others are dropped already
        return torch.where(repeat & in_range, -1, indices)


class SparseFeatures:
    """Features as each row's `(indices [N, k], values [N, k])`; every other feature is 0.

    Indices within a row must be distinct (as a top-k gives them; `RepeatFilter` makes them
    so, -1 standing for a dropped entry).
    """

    def __init__(self, indices: Tensor, values: Tensor, d_sae: int) -> None:
        self.indices = indices.to(torch.int64)
        self.values = values
        self.d_sae = d_sae

    @property
    def n(self) -> int:
        """Number of rows (tokens)."""
        return self.indices.shape[0]

    def rows(self, pick: Tensor) -> SparseFeatures:
        """The rows at `pick`."""
        return SparseFeatures(self.indices.index_select(0, pick),
                              self.values.index_select(0, pick), self.d_sae)

    def top(self, k: int) -> tuple[Tensor, Tensor]:
        """Each row's k strongest features; past the stored k (and for entries outside
        0..d_sae-1, which are dropped), index -1 with value 0."""
        have = self.indices.shape[1]
        stored = (self.indices >= 0) & (self.indices < self.d_sae)
        values, order = torch.topk(torch.where(stored, self.values.float(), -torch.inf),
                                   min(k, have), dim=1)
        absent = ~stored.gather(1, order)
        indices = torch.where(absent, -1, self.indices.gather(1, order)).to(torch.int32)
        values = torch.where(absent, 0.0, values)
        if k > have:
            pad = k - have
            indices = torch.cat([indices, indices.new_full((self.n, pad), -1)], 1)
            values = torch.cat([values, values.new_zeros(self.n, pad)], 1)
        return indices, values

    def columns(self, index: Tensor) -> Tensor:
        """Values of the features `index` [E] per row (0 where not among the row's top-k)."""
        hit = self.indices[:, :, None] == index[None, None, :]  # [N, k, E]
        return torch.where(hit, self.values.float()[:, :, None], 0.0).sum(1)

    def top_of(self, pick: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """`rows(pick).top(k)`."""
        return self.rows(pick).top(k)

    def columns_of(self, pick: Tensor, index: Tensor) -> Tensor:
        """`rows(pick).columns(index)`."""
        return self.rows(pick).columns(index)

    def dense(self) -> Tensor:
        """The dense `[N, d_sae]` form (for tests and fallbacks)."""
        out = torch.zeros(self.n, self.d_sae, dtype=self.values.dtype, device=self.values.device)
        return out.scatter_(1, self.indices, self.values)
