"""What the statistics pass and the sample of activating tokens share when one read of a
dense CPU forward serves both (`csrc/dense_moments.c` with a probe, see `rider.py`, then
`csrc/examples.c` `featmon_sample_fused`): the forward's token hashes, the sample's kept keys,
and the candidate buffer the statistics pass fills."""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass
class SampleProbe:
    """One forward's probe of the sample (see module doc).

    `token_key` [N]: the tokens' hashes; `key` [F, E]: the kept keys (read, not written);
    `cand` int32 [capacity, 2]: (feature, row) pairs, split evenly between the `found`
    int64 [slots] parts, whose counts the pass writes (-1: that part overflowed, and the
    sample then folds the forward by its own pass); `filled`: whether the pass ran."""

    token_key: Tensor
    key: Tensor
    cand: Tensor
    found: Tensor
    filled: bool = False

    @classmethod
    def new(cls, token_key: Tensor, key: Tensor, capacity: int) -> SampleProbe:
        """A probe with room for `capacity` candidates in all, in one part per thread."""
        slots = max(1, torch.get_num_threads())
        per_part = max(1, capacity // slots)
        return cls(token_key, key, torch.empty((per_part * slots, 2), dtype=torch.int32),
                   torch.zeros(slots, dtype=torch.int64))
