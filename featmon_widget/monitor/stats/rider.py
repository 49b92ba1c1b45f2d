"""What the dense statistics pass on the CPU (`csrc/dense_moments.c`) counts along the way, in
the same read of the features: every feature's value distribution (`record/distributions.py`),
with a probe the candidates of the sample of activating tokens (`sample_probe.py`), on a
forward the health check samples each token's L0 (`oversight/health.py`), and the history's
rows' top-k (`RowTops`, `record/history.py`).
Elsewhere (GPU, the torch paths) nothing rides along and `counted` stays False: the parts
then count by their own passes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...snapshot.value_bins import DIST_BINS
from .sample_native import check_buffers
from .sample_probe import SampleProbe

Tensor = torch.Tensor


@dataclass
class RowTops:
    """The history's rows of one forward and their top-k, found by the statistics pass.

    `pick` [M] int64: the rows whose k largest values are wanted (-1: a filler whose result
    nobody reads); `placement`: the history's own bookkeeping for the same rows, carried to its
    write. The pass fills `val` [M, k] float32 and `idx` [M, k] int32 (largest first, ties to
    the lower feature) and says in `ranked` whether it could (each row had k counted values and
    the forward no NaN or Inf); where not, the caller ranks the rows."""

    pick: Tensor
    k: int
    placement: tuple[Tensor, ...]
    val: Tensor = field(init=False)
    idx: Tensor = field(init=False)
    ranked: bool = False

    def __post_init__(self) -> None:
        m = self.pick.shape[0]
        self.val = torch.empty(m, self.k, dtype=torch.float32)
        self.idx = torch.empty(m, self.k, dtype=torch.int32)

    def args(self, acts: Tensor) -> tuple[int, ...]:
        """`featmon_dense_moments`' top-k arguments for features `acts` [N, F] (zeros where the
        pass is not to rank them: float16, whose rows torch ranks, or k above F)."""
        if acts.dtype not in (torch.float32, torch.bfloat16) or not 1 <= self.k <= acts.shape[1]:
            return (0,) * 5
        check_buffers(self.pick.dtype == torch.int64 and self.pick.dim() == 1
                      and self.pick.shape[0] >= 1, self.pick, self.val, self.idx)
        return (self.pick.data_ptr(), self.pick.shape[0], self.k, self.val.data_ptr(),
                self.idx.data_ptr())


@dataclass
class StatisticsRider:
    """One forward's ride-along (see module doc): `counts` [F, DIST_BINS] (int32 or int64),
    added to in place; `probe`, filled when the pass can (float32 / bfloat16 features); `l0`
    [N] int32 zeros, given each valid row's finite values above the threshold (any of the three
    may be None); `counted`: whether the pass counted (all of them)."""

    counts: Tensor | None
    probe: SampleProbe | None = None
    l0: Tensor | None = None
    counted: bool = False
    tops: RowTops | None = None

    def fits(self, acts: Tensor) -> bool:
        """Whether the counts are for features like `acts` [N, F] (an SAE whose encode gave
        another width fails its forward later, with its own error: nothing is counted)."""
        c = self.counts
        return c is None or (c.shape == (acts.shape[1], DIST_BINS) and c.device.type == "cpu"
                             and c.dtype in (torch.int32, torch.int64) and c.is_contiguous())

    def probes(self, acts: Tensor) -> bool:
        """Whether the probe can be filled from `acts` [N, F]."""
        p = self.probe
        return (p is not None and acts.dtype in (torch.float32, torch.bfloat16)
                and p.token_key.shape == (acts.shape[0],) and p.key.shape[0] == acts.shape[1])

    @staticmethod
    def kernel_args(rider: StatisticsRider | None, acts: Tensor) -> tuple[int, ...]:
        """`featmon_dense_moments`' distribution, probe, L0 and history top-k arguments for
        `rider` and the features `acts` [N, F] (zeros: none), checked; marks what the pass
        will fill."""
        if rider is None or not rider.fits(acts):
            return (0,) * 15
        tops = (0,) * 5 if rider.tops is None else rider.tops.args(acts)
        return (*rider._count_args(acts), *tops)

    def note_ranked(self, status: int) -> None:
        """The pass's return `status`: 1 where it ranked the history's rows (`RowTops`)."""
        if self.tops is not None:
            self.tops.ranked = status == 1

    def _count_args(self, acts: Tensor) -> tuple[int, ...]:
        """The distribution, probe and L0 arguments (`kernel_args`' first ten)."""
        c = self.counts
        counts = (0, 0) if c is None else (c.data_ptr(), int(c.dtype == torch.int64))
        self.counted = True
        l0 = self.l0
        if l0 is not None:
            check_buffers(l0.dtype == torch.int32 and l0.shape == (acts.shape[0],), l0)
        tail = 0 if l0 is None else l0.data_ptr()
        probe = self.probe
        if probe is None or not self.probes(acts):
            return (*counts, 0, 0, 0, 0, 0, 0, 0, tail)
        slots = probe.found.shape[0]
        check_buffers(probe.token_key.dtype == probe.key.dtype == torch.int64
                      and probe.key.dim() == 2 and probe.key.shape[1] >= 1
                      and probe.cand.dtype == torch.int32 and probe.cand.dim() == 2
                      and probe.cand.shape[1] == 2 and probe.found.dtype == torch.int64
                      and probe.found.dim() == 1 and probe.cand.shape[0] >= slots >= 1,
                      probe.token_key, probe.key, probe.cand, probe.found)
        probe.filled = True
        return (*counts, probe.token_key.data_ptr(), probe.key.data_ptr(), probe.key.shape[1],
                probe.cand.data_ptr(), probe.cand.shape[0] // slots, probe.found.data_ptr(),
                slots, tail)
