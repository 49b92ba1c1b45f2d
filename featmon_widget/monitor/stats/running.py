"""Exact running per-feature statistics, kept on the activations' device (see `moments` for
the arithmetic, `compiled` for how it runs, `pending` for TopK values held in a CPU table).

After `FeatureMonitor.sync`, readers see this process's own totals combined with the other
ranks' totals as of that sync (`remote`); updates only ever touch this process's own totals,
so syncing again never counts a value twice."""

from __future__ import annotations

from typing import Any

import torch

from ...checks import cut
from ...types import METRICS
from ..record.registry import CHAN, MAX_COUNT, Event, Spec, StatePart, check_range, nbytes, spec_of
from .kernels import StatisticsKernels
from .moments import Moments, Totals, combine_totals, empty_totals, sparse_shift
from .native import RowMaxima
from .pending import PendingSparse
from .rider import StatisticsRider

Tensor = torch.Tensor


class RunningStats(StatePart):
    """Per-feature count, mean, variance, min, max and active statistics since the last reset.

    The totals are read through properties, so TopK values still held in a CPU table
    (`pending.PendingSparse`) are merged first and every reader sees every value recorded.
    """

    name = "stats"
    sync_rules = dict.fromkeys(Totals._fields, CHAN)

    def __init__(self, d_sae: int, device: torch.device,
                 compiled: StatisticsKernels | None = None):
        self.d_sae = d_sae
        self.device = torch.device(device)
        # The statistics kernels, and through their backend the TopK table's C kernel.
        self.compiled = compiled or StatisticsKernels()
        self._pending: PendingSparse | None = None  # made on the first CPU TopK update
        self._remote: Totals | None = None
        self.reset()

    def reset(self) -> None:
        """Forget everything; allocates fresh zeroed state on the device."""
        self._totals = empty_totals(self.d_sae, self.device)
        self._dropped = torch.zeros((), dtype=torch.int64, device=self.device)
        self._merged_any = False
        self._remote = None
        self._view: Totals | None = None
        if self._pending is not None:
            self._pending.clear()

    count = property(lambda self: self.totals.count, doc="int64 [F]: finite values seen")
    nan_count = property(lambda self: self.totals.nan_count, doc="int64 [F]: NaN/Inf seen")
    active_count = property(lambda self: self.totals.active_count,
                            doc="int64 [F]: values > threshold")
    active_sum = property(lambda self: self.totals.active_sum,
                          doc="float64 [F]: sum of active values")
    mean = property(lambda self: self.totals.mean, doc="float64 [F]: mean of finite values")
    m2 = property(lambda self: self.totals.m2, doc="float64 [F]: sum of squared deviations")
    min = property(lambda self: self.totals.min, doc="float64 [F]: +inf where none seen")
    max = property(lambda self: self.totals.max, doc="float64 [F]: -inf where none seen")

    @property
    def totals(self) -> Totals:
        """Every running total, with held TopK values merged first, and the other ranks'
        totals as of the last sync combined in (`remote`)."""
        local = self.local
        if self._remote is None:
            return local
        if self._view is None:
            self._view = combine_totals(self._remote, local)
        return self._view

    @property
    def local(self) -> Totals:
        """This process's own running totals (held TopK values merged first)."""
        self.flush()
        return self._totals

    @property
    def remote(self) -> Totals | None:
        """The other ranks' totals as of the last sync (None: never synced since reset)."""
        return self._remote

    @remote.setter
    def remote(self, totals: Totals | None) -> None:
        self._remote = totals
        self._view = None

    @property
    def pending_table(self) -> PendingSparse | None:
        """The CPU table holding TopK values until the next merge (None until the native
        kernel is first used, and where it is not)."""
        return self._pending

    @property
    def dropped_indices(self) -> Tensor:
        """int64 scalar: sparse indices outside 0..d_sae-1 (in valid rows), ignored."""
        self.flush()
        return self._dropped

    # ---- StatePart: saved, reset on a statistics reset (the active part on a threshold
    # change), the totals merged across ranks by Chan's formula ----------------------------

    def state_tensors(self) -> dict[str, Tensor]:
        """This process's statistics (held TopK values merged first) and, after a sync, the
        other ranks' totals (`remote.<field>`)."""
        remote = {} if self._remote is None else {
            f"remote.{n}": t for n, t in self._remote._asdict().items()}
        return {**self.local._asdict(), "dropped": self._dropped, **remote}

    def state_meta(self) -> dict[str, bool]:
        """What besides the tensors decides how later updates round (see `update_sparse`), and
        whether the other ranks' totals are held."""
        return {"merged_any": self._merged_any, "remote": self._remote is not None}

    def check_meta(self, meta: dict[str, Any]) -> None:
        """`state_meta`'s two flags must be true or false."""
        if set(meta) != {"merged_any", "remote"} or not all(
                isinstance(v, bool) for v in meta.values()):
            raise ValueError(f"stats.merged_any and stats.remote must be true or false, got "
                             f"{cut(repr(meta), 80)}")

    def expected_tensors(self, meta: dict[str, Any]) -> dict[str, Spec]:
        """The totals and dropped count, and the other ranks' totals when `meta` says so."""
        local = {n: spec_of(t) for n, t in self._totals._asdict().items()}
        remote = {f"remote.{n}": spec for n, spec in local.items()} if meta["remote"] else {}
        return {**local, "dropped": spec_of(self._dropped), **remote}

    def check_values(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Counts in 0..`MAX_COUNT`, active counts at most the values counted, M2 not
        negative."""
        check_range(self.name, tensors, "dropped", 0, MAX_COUNT)
        for prefix in ("", "remote.") if meta["remote"] else ("",):
            for field in ("count", "nan_count", "active_count"):
                check_range(self.name, tensors, prefix + field, 0, MAX_COUNT)
            check_range(self.name, tensors, prefix + "m2", 0)
            seen = tensors[prefix + "count"] + tensors[prefix + "nan_count"]
            if bool((tensors[prefix + "active_count"] > seen).any()):
                raise ValueError(f"the save's tensor 'stats.{prefix}active_count' exceeds the "
                                 f"values counted: the save is corrupt")

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Copy a checked save in (this process's totals, and the other ranks' if saved)."""
        for name, target in {**self.local._asdict(), "dropped": self._dropped}.items():
            target.copy_(tensors[name])
        self.remote = Totals(*(tensors[f"remote.{n}"].to(self.device, copy=True)
                               for n in Totals._fields)) if meta["remote"] else None
        self._merged_any = meta["merged_any"]

    def reset_on(self, event: Event) -> None:
        """A statistics reset forgets everything, a threshold change the active part."""
        if event is Event.STATISTICS:
            self.reset()
        elif event is Event.THRESHOLD:
            self.reset_active()

    def take_remote(self, merged: dict[str, Tensor] | None) -> None:
        """The other ranks' totals, combined, become the remote view."""
        self.remote = None if merged is None else Totals(**merged)

    def memory_bytes(self) -> dict[str, int]:
        """The totals (see `nbytes`) and the CPU TopK table once made."""
        pending = self._pending
        table = 0 if pending is None else nbytes((pending.table, pending.shift))
        return {"statistics": self.nbytes, "pending_topk": table}

    def reset_active(self) -> None:
        """Forget only the threshold-dependent statistics (after the threshold changed)."""
        for totals in (self.local, self._remote):  # held values: judged by the old threshold
            if totals is not None:
                totals.active_count.zero_()
                totals.active_sum.zero_()
        self._view = None

    def update(self, acts: Tensor, valid: Tensor | None, threshold: float,
               tokens: int | None = None, rider: StatisticsRider | None = None
               ) -> RowMaxima | None:
        """Fold `acts` [N, d_sae] (rows where `valid` is true; all if None) into the running
        statistics. With `tokens`, also the row maxima of its sequences of `tokens` rows when
        the same pass can give them (the native CPU kernel), else None; that pass also counts
        what `rider` asks (`StatisticsRider`)."""
        maxima = self.compiled.update(self.local, acts, valid, threshold, tokens, rider)
        self.merged()
        return maxima

    def update_sparse(self, indices: Tensor, values: Tensor, valid: Tensor,
                      threshold: float) -> None:
        """Fold top-k features `(indices, values)` [N, k] (0 elsewhere) into the statistics.
        Indices outside 0..d_sae-1 are ignored and counted in `dropped_indices`."""
        pending = self._pending_table(indices.device)
        if pending is None:
            totals, dropped = self.compiled.sparse_update(self.local, indices, values, valid,
                                                          threshold)
            self._totals = Totals(*totals)
            self._view = None
            self._merged_any = True
            self._dropped += dropped
            return
        if pending.must_merge_before(indices.shape[0], threshold):
            self.flush()
        if not pending.rows_held:
            pending.start(sparse_shift(self._totals.count, self._totals.mean), threshold)
        pending.add(indices, values, valid)
        if not self._merged_any:
            self.flush()  # so later tables are taken against a real mean

    def _pending_table(self, device: torch.device) -> PendingSparse | None:
        """The CPU table for TopK values on `device`, where the backend runs the C kernel."""
        accumulate = self.compiled.backend.sparse(device)
        if accumulate is not None and self._pending is None:
            self._pending = PendingSparse(self.d_sae, accumulate)
        return None if accumulate is None else self._pending

    def flush(self) -> None:
        """Merge TopK values held in the CPU table into the running totals."""
        pending = self._pending
        if pending is None or not pending.rows_held:
            return
        dropped = pending.merge_into(self._totals)  # the C kernel empties the table too
        self._dropped = self._dropped + dropped
        self._merged_any = True
        self._view = None

    def merge(self, shift: Tensor | None, moments: Moments | None) -> None:
        """Fold one batch's `batch_moments` (taken against `shift`) into the running totals;
        None: the statistics pass merged them already (see `StatisticsKernels`)."""
        if moments is not None:
            assert shift is not None  # the moments were taken against it
            self.compiled.merge(self.local, shift, moments)
        self.merged()

    def merged(self) -> None:
        """Note that a batch was merged into this process's totals."""
        self._merged_any = True
        self._view = None

    def std(self) -> Tensor:
        """Sample standard deviation (n - 1); 0 where fewer than two values were seen."""
        return _std(self.totals)

    def mean_active(self) -> Tensor:
        """Mean over active values; NaN where no value was active."""
        return metric_of(self.totals, "mean_active")

    def active_ratio(self) -> Tensor:
        """Fraction of finite values above the threshold; NaN where no value was seen."""
        return metric_of(self.totals, "active_ratio")

    @property
    def nbytes(self) -> int:
        """Bytes of the totals (this process's, and the other ranks' view), read without
        merging held TopK values."""
        held = [*self._totals, *(self._remote or ())]
        return sum(t.numel() * t.element_size() for t in held)

    def metric(self, name: str) -> Tensor:
        """One per-feature metric as float64 [F], NaN where undefined (never-seen features)."""
        return metric_of(self.totals, name)

    def metrics_at(self, names: tuple[str, ...] | list[str], index: Tensor) -> Tensor:
        """The metrics `names` of the features `index` [E], float64 [len(names), E]: the
        totals of those features are gathered first, so the cost is O(E), not O(d_sae)."""
        picked = Totals(*(t.index_select(0, index) for t in self.totals))
        if not names:
            return torch.zeros(0, index.shape[0], dtype=torch.float64, device=index.device)
        return torch.stack([metric_of(picked, name) for name in names])


def _std(t: Totals) -> Tensor:
    denom = (t.count - 1).clamp_min(1).to(torch.float64)
    return torch.where(t.count > 1, (t.m2 / denom).sqrt(), 0.0)


def metric_of(t: Totals, name: str) -> Tensor:
    """One metric of every feature in `t`, float64, NaN where undefined."""
    seen = t.count > 0
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=t.count.device)
    if name == "mean":
        return torch.where(seen, t.mean, nan)
    if name == "mean_active":
        return t.active_sum / t.active_count.to(torch.float64)
    if name == "max":
        return torch.where(seen, t.max, nan)
    if name == "min":
        return torch.where(seen, t.min, nan)
    if name == "active_ratio":
        return t.active_count.to(torch.float64) / t.count.to(torch.float64)
    if name == "count":
        return t.count.to(torch.float64)
    if name == "active_count":
        return t.active_count.to(torch.float64)
    if name == "std":
        return torch.where(seen, _std(t), nan)
    raise ValueError(f"unknown metric {name!r}; expected one of {', '.join(METRICS)}")
