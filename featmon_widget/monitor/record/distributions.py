"""Per-feature activation distributions of every feature since the last reset, on the device.

Each feature has `DIST_BINS` (32) integer counts: 31 log bins of its active values (x above
the threshold) and, last, its inactive values (finite, at most the threshold). The bins are
`snapshot/value_bins.py`'s: edges 2^e and 1.5 * 2^e for e in -8..6 (2^-8 = 0.0039 up to 96),
exact in float32; bin 0 holds the active values below 2^-8 (and every active value <= 0,
under a negative threshold), bin 30 those from 96 up. On the float32 bits the bin is
`clamp((bits >> 22) - 237, 0, 30)` (bits >> 22 is twice the biased exponent plus the top
mantissa bit): the C kernel and the torch paths bin that way, and an offline numpy binning
(`searchsorted(EDGES, x, side="right")`) gives the same counts. Inputs that
are not float32 / bfloat16 / float16 (exactly float32 values) are binned after rounding to
float32; whether a value is active is decided exactly (as the statistics do). NaN and Inf are
not counted; padding rows neither.

Where it runs: dense features on the CPU are counted by the statistics pass itself, on the
rows it has just read (`csrc/dense_moments.c`; `rider` hands it the counts); elsewhere (GPU,
native off) a torch scatter-add over row chunks of at most `CHUNK_ELEMENTS` values; TopK
features scatter their k values per token (an implicit 0 is inactive, or under a negative
threshold active, in bin 0). Nothing is read back to the host.

Counts are int32 (128 bytes a feature: 8 MiB at d_sae 65,536, 128 MiB at 1,048,576) and become
int64, exactly, before any could pass 2^31 - 1: the rows fed since the reset are counted on the
host (`bound`), and no count grows by more than one a row. `MonitorConfig.distributions=False`
keeps none (for very wide SAEs). A statistics reset or a threshold change zeroes them. After a
`sync` the other ranks' summed counts are held apart (int64), as the statistics do.
"""

from __future__ import annotations

from typing import Any

import torch

from ...snapshot.value_bins import DIST_BIN_BIAS, DIST_BINS, DIST_LOG_BINS
from ..stats.rider import StatisticsRider
from .cofiring import INT32_MAX, floor_in
from .features import DenseFeatures, SparseFeatures
from .registry import MAX_COUNT, SUM, Event, Spec, StatePart, check_range, nbytes

Tensor = torch.Tensor

INACTIVE = DIST_BINS - 1  # the column of the inactive count
# Values per temporary block of the dense torch path (bounded memory at any d_sae).
CHUNK_ELEMENTS = 1 << 22



def log_bins(x: Tensor) -> Tensor:
    """The log bin (0..30, int64) of each value of `x` rounded to float32 (see module doc)."""
    bits = x.to(torch.float32).contiguous().view(torch.int32)
    return ((bits >> 22).to(torch.int64) - DIST_BIN_BIAS).clamp_(0, DIST_LOG_BINS - 1)


def _active(x: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """(finite, finite and above `threshold`) for `x`, compared exactly in its own dtype."""
    if x.dtype.is_floating_point:
        t = floor_in(x.dtype, threshold)
        return torch.isfinite(x), x > t
    wide = x.to(torch.float64)
    return torch.ones_like(x, dtype=torch.bool), wide > threshold


class Distributions(StatePart):
    """The value distributions of every feature (see module doc)."""

    name = "distributions"
    since_format = 4
    sync_rules = {"counts": SUM}

    def __init__(self, d_sae: int, device: torch.device, enabled: bool = True) -> None:
        self.d_sae = d_sae
        self.device = torch.device(device)
        self.enabled = enabled
        self.rows = d_sae if enabled else 0
        self.counts = torch.zeros(self.rows, DIST_BINS, dtype=torch.int32, device=self.device)
        self.bound = 0  # rows fed since the reset: what any count can have reached
        self.remote: Tensor | None = None  # the other ranks' counts at the last sync

    # ---- recording --------------------------------------------------------------------------

    def counts_for(self, n: int, staged: bool = False) -> Tensor | None:
        """For the dense statistics pass of the next forward (`n` rows), where it runs natively
        (`StatisticsRider`): the counts to count into, widened first if this forward could pass
        int32; None while off. `staged`: zeroed counts of their own instead, added by `update`
        (for a forward that can still fail after its statistics pass: a failed forward changes
        nothing)."""
        if not self.enabled:
            return None
        self._widen_for(n)
        return torch.zeros_like(self.counts, dtype=torch.int32) if staged else self.counts

    def update(self, features: DenseFeatures | SparseFeatures, valid: Tensor,
               threshold: float, rider: StatisticsRider | None = None) -> None:
        """Count one forward's values in rows where `valid` is true, unless its statistics pass
        counted them (`rider`; staged counts are added now)."""
        if not self.enabled:
            return
        self._widen_for(features.n)
        self.bound += features.n
        if rider is not None and rider.counted and rider.counts is not None:
            if rider.counts is not self.counts:
                self.counts += rider.counts
            return
        if isinstance(features, SparseFeatures):
            self._update_sparse(features, valid, threshold)
        else:
            self._update_dense(features.acts, valid, threshold)

    def _widen_for(self, n: int) -> None:
        """int64 counts before `n` more rows could take one past int32 (see module doc)."""
        if self.bound + n > INT32_MAX and self.counts.dtype != torch.int64:
            self.counts = self.counts.to(torch.int64)

    def _update_dense(self, acts: Tensor, valid: Tensor, threshold: float) -> None:
        n, d = acts.shape
        step = max(1, CHUNK_ELEMENTS // max(1, d))
        offsets = torch.arange(d, device=self.device) * DIST_BINS
        flat = self.counts.view(-1)
        for r in range(0, n, step):
            x = acts[r:r + step]
            finite, on = _active(x, threshold)
            keep = finite & valid[r:r + step, None]
            bins = torch.where(on, log_bins(x), INACTIVE) + offsets
            flat.scatter_add_(0, bins.reshape(-1), keep.reshape(-1).to(flat.dtype))

    def _update_sparse(self, features: SparseFeatures, valid: Tensor, threshold: float) -> None:
        idx, values = features.indices, features.values
        stored = valid[:, None] & (idx >= 0) & (idx < self.d_sae)  # [N, k]
        finite, on = _active(values, threshold)
        keep = stored & finite
        bins = torch.where(on, log_bins(values), INACTIVE)
        at = torch.where(stored, idx, 0) * DIST_BINS + bins
        flat = self.counts.view(-1)
        flat.scatter_add_(0, at.reshape(-1), keep.reshape(-1).to(flat.dtype))
        # Every other valid row holds an implicit 0: inactive, or active (bin 0) below 0. Add
        # every valid row to that column, then take the stored entries off (in place: nothing
        # the size of d_sae is allocated).
        zero = 0 if threshold < 0.0 else INACTIVE
        self.counts[:, zero] += valid.sum().to(flat.dtype)
        flat.scatter_add_(0, (torch.where(stored, idx, 0) * DIST_BINS + zero).reshape(-1),
                          -stored.reshape(-1).to(flat.dtype))

    # ---- reading ----------------------------------------------------------------------------

    def row(self, feature: int) -> Tensor:
        """Feature `feature`'s counts, int64 [DIST_BINS], here plus the other ranks' as of the
        last sync (a device tensor)."""
        counts = self.counts[feature].to(torch.int64)
        return counts if self.remote is None else counts + self.remote[feature]

    def rows_of(self, index: Tensor) -> Tensor:
        """The counts of the features `index` [E], int64 [E, DIST_BINS] (with the remote)."""
        counts = self.counts.index_select(0, index).to(torch.int64)
        return counts if self.remote is None else counts + self.remote.index_select(0, index)

    def snapshot_rows(self, features: tuple[int, ...]) -> tuple[tuple[int, ...], Tensor]:
        """The snapshot's value histograms of `features` (zeros while off): int64 [S, 32],
        the inactive count first, then the log bins (the layout of `value_counts`)."""
        if not self.enabled:
            return features, torch.zeros(len(features), DIST_BINS, dtype=torch.int64,
                                         device=self.device)
        rows = self.rows_of(torch.tensor(features, dtype=torch.int64, device=self.device))
        return features, torch.cat([rows[:, INACTIVE:], rows[:, :INACTIVE]], 1)

    # ---- StatePart --------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, Tensor]:
        """The counts (int32 or int64) and the other ranks' (int64) after a sync."""
        remote = {} if self.remote is None else {"remote": self.remote}
        return {"counts": self.counts, **remote}

    def state_meta(self) -> dict[str, Any]:
        """The row bound (whether the counts are int64) and whether a remote view is held."""
        return {"bound": self.bound, "remote": self.remote is not None}

    def check_meta(self, meta: dict[str, Any]) -> None:
        """A non-negative int bound and a bool."""
        bound = meta.get("bound")
        if set(meta) != {"bound", "remote"} or not isinstance(bound, int) \
                or isinstance(bound, bool) or not 0 <= bound <= MAX_COUNT \
                or not isinstance(meta["remote"], bool):
            raise ValueError(f"expected {{'bound': int >= 0, 'remote': bool}}, got "
                             f"{str(meta)[:80]}")

    def expected_tensors(self, meta: dict[str, Any]) -> dict[str, Spec]:
        """Counts of this configuration's rows, int64 once the bound passed int32."""
        wide = torch.int64 if meta["bound"] > INT32_MAX else torch.int32
        specs = {"counts": Spec((self.rows, DIST_BINS), wide)}
        if meta["remote"]:
            specs["remote"] = Spec((self.rows, DIST_BINS), torch.int64)
        return specs

    def check_values(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Counts in 0..`MAX_COUNT` (0..2^31 - 1 for int32)."""
        for name, t in tensors.items():
            check_range(self.name, tensors, name, 0,
                        INT32_MAX if t.dtype == torch.int32 else MAX_COUNT)

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Take the saved counts (at their width) and remote view."""
        self.bound = meta["bound"]
        self.counts = tensors["counts"].to(self.device).clone()
        self.remote = tensors["remote"].to(self.device).clone() if meta["remote"] else None

    def reset_on(self, event: Event) -> None:
        """A statistics reset or threshold change starts every count again (int32; the
        other ranks' too)."""
        if event in (Event.STATISTICS, Event.THRESHOLD):
            if self.counts.dtype == torch.int32:
                self.counts.zero_()
            else:
                self.counts = torch.zeros_like(self.counts, dtype=torch.int32)
            self.bound, self.remote = 0, None

    def sync_state(self) -> dict[str, Tensor]:
        """This rank's counts (int64, whatever the local width)."""
        return {"counts": self.counts.to(torch.int64)}

    def take_remote(self, merged: dict[str, Tensor] | None) -> None:
        """The other ranks' summed counts become the remote view."""
        self.remote = None if merged is None else merged["counts"]

    def memory_bytes(self) -> dict[str, int]:
        """The counts (and the remote view's, after a sync)."""
        held = [self.counts] + ([] if self.remote is None else [self.remote])
        return {"distributions": nbytes(held)}
