"""What the dense statistics pass on the CPU (`csrc/dense_moments.c`) counts along the way, in
the same read of the features: every feature's value distribution (`record/distributions.py`),
with a probe the candidates of the sample of activating tokens (`sample_probe.py`), and on a
forward the health check samples, each token's L0 (`oversight/health.py`).
Elsewhere (GPU, the torch paths) nothing rides along and `counted` stays False: the parts
then count by their own passes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...snapshot.value_bins import DIST_BINS
from .sample_probe import SampleProbe

Tensor = torch.Tensor


@dataclass
class StatisticsRider:
    """One forward's ride-along (see module doc): `counts` [F, DIST_BINS] (int32 or int64),
    added to in place; `probe`, filled when the pass can (float32 / bfloat16 features); `l0`
    [N] int32 zeros, given each valid row's finite values above the threshold; `counted`:
    whether the pass counted (all of them)."""

    counts: Tensor
    probe: SampleProbe | None = None
    l0: Tensor | None = None
    counted: bool = False

    def fits(self, acts: Tensor) -> bool:
        """Whether the counts are for features like `acts` [N, F] (an SAE whose encode gave
        another width fails its forward later, with its own error: nothing is counted)."""
        c = self.counts
        return (c.shape == (acts.shape[1], DIST_BINS) and c.dtype in (torch.int32, torch.int64)
                and c.device.type == "cpu" and c.is_contiguous())

    def probes(self, acts: Tensor) -> bool:
        """Whether the probe can be filled from `acts` [N, F]."""
        p = self.probe
        return (p is not None and acts.dtype in (torch.float32, torch.bfloat16)
                and p.token_key.shape == (acts.shape[0],) and p.key.shape[0] == acts.shape[1])
