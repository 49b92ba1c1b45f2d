"""Everything a monitor has recorded, on one device, and the configuration it records with.

`Recording` owns the running statistics, the history ring, the top-activating examples, every
feature's value distribution, the per-request positions and the token totals. It is the
`SnapshotSource` the snapshot builder reads. Callers hold the monitor's lock.
"""

from __future__ import annotations

import time

import torch

from ...snapshot.records import HistoryTail
from ...snapshot.source import CoFiringTop, DeviceTotals, ExampleSlices, ValueHistogramCounts
from ..config import MonitorConfig, feature_list
from ..oversight.health import HealthTracker
from ..oversight.watch import Watch
from ..oversight.watchset import WatchSet
from ..query.cofiring_ranking import cofiring_top
from ..query.firing import firing_summary
from ..query.queries import rank
from ..stats.kernels import StatisticsKernels
from ..stats.native import RowMaxima
from ..stats.rider import StatisticsRider
from ..stats.running import RunningStats
from .cofiring import CoFiring
from .costs import CostMeter
from .distributions import Distributions
from .examples import ExampleTable
from .features import DenseFeatures, SparseFeatures
from .histograms import LegacyValueHistograms
from .history import HistoryRing
from .positions import RequestPositions, as_batch_mask, check_positions
from .registry import Event, StatePart, StateRegistry
from .requests import check_new_request_id
from .samples import SampleTable
from .totals import RecordingTotals, RemoteView

Tensor = torch.Tensor


class Recording:
    """Statistics, history, distributions and totals of one monitor (see module doc)."""

    def __init__(self, d_sae: int, config: MonitorConfig, device: torch.device | None,
                 compiled: StatisticsKernels) -> None:
        self.d_sae = d_sae
        self.config = config
        self.compiled = compiled
        self.backend = compiled.backend  # the monitor's choice of kernels, for every part
        # An explicit device is kept; otherwise the first activations choose it.
        self.device_fixed = device is not None
        self.positions = RequestPositions()
        self.forward_passes = 0
        self.remote: RemoteView | None = None
        # The active watches, recorded in one batched pass per forward.
        self.watch_set = WatchSet(torch.device(device) if device is not None
                                  else torch.device("cpu"))
        self.extra_parts: list[StatePart] = []  # recorded state an extension adds
        self.retired_watches: list[Watch] = []  # cancelled, with hits still to deliver
        self.costs = CostMeter()
        # Whether the sample rides on the statistics pass (`stats_rider`); off: its own pass.
        self.fuse_samples = True
        self.allocate(torch.device(device) if device is not None else torch.device("cpu"))

    @property
    def watches(self) -> list[Watch]:
        """The active watches, in the order they were made."""
        return list(self.watch_set.watches)

    def allocate(self, device: torch.device) -> None:
        """Fresh, empty state on `device`."""
        cfg = self.config
        self.device = device
        self.stats = RunningStats(self.d_sae, device, self.compiled)
        self.history = HistoryRing(cfg.history_size, cfg.top_k, cfg.features or (), device,
                                   self.d_sae)
        self.distributions = Distributions(self.d_sae, device, cfg.distributions)
        self.cofiring = CoFiring(cfg.selected, self.d_sae, device, self.backend)
        self.examples = ExampleTable(self.d_sae, cfg.examples_per_feature, cfg.context_window,
                                     device, self.backend)
        self.samples = self._new_samples(cfg, device)
        self.tokens = torch.zeros((), dtype=torch.int64, device=device)
        # Tokens since the threshold was set: the denominator of the exact mean L0.
        self.active_tokens = torch.zeros((), dtype=torch.int64, device=device)
        self.health = HealthTracker(device)
        self.positions.device = device
        self.watch_set.move_to(device)
        self.since = self.active_since = time.time()

    def _new_samples(self, cfg: MonitorConfig, device: torch.device) -> SampleTable:
        """An empty sample of activating tokens sharing the examples' request names."""
        samples = SampleTable(self.d_sae, cfg.samples_per_feature, cfg.context_window,
                              cfg.sample_seed, device, self.backend)
        samples.names = self.examples.names
        self.examples.holders = [samples]
        return samples

    def adopt_device(self, device: torch.device) -> None:
        """Follow the activations' device while nothing is recorded; afterwards keep ours.
        `meta` tensors (no values) are only recorded by a monitor made for `device="meta"`."""
        if device == self.device or self.device_fixed:
            return
        if device.type == "meta":
            raise ValueError("meta tensors have no values to record; make the monitor with "
                             "device='meta' to run it on meta tensors on purpose")
        if self.forward_passes == 0:
            self.allocate(device)
        self.device_fixed = True

    # ---- recording --------------------------------------------------------------------------

    def positions_for(self, request_id: str, batch: int, tokens: int, positions: Tensor | None,
                      mask: Tensor | None, position_ids: Tensor | None = None
                      ) -> tuple[Tensor, Tensor]:
        """Flat positions and validity [batch * tokens] of one forward pass (see
        `RequestPositions.assign`); `positions` overrides the automatic ones."""
        check_new_request_id(request_id)
        if positions is not None:
            check_positions(positions, batch * tokens)
        if mask is not None:
            mask = as_batch_mask(mask, batch, tokens).to(self.device)
        if positions is None:
            pos, valid = self.positions.assign(request_id, batch, tokens, mask, self.device,
                                               position_ids)
        else:
            pos = positions.to(self.device, torch.int64).reshape(batch, tokens)
            valid = (mask[:, -tokens:] != 0 if mask is not None else
                     torch.ones(batch, tokens, dtype=torch.bool, device=self.device))
        return pos.reshape(-1), valid.reshape(-1)

    def request_codes(self, request_id: str) -> tuple[int, int]:
        """The history's and the examples' codes for one forward of `request_id` (checked),
        taken before anything is merged: a request that cannot be coded fails the forward
        while the statistics are unchanged."""
        check_new_request_id(request_id)
        return self.history.register(request_id), self.examples.code_of(request_id)

    def stats_rider(self, valid: Tensor, staged: bool = False) -> StatisticsRider | None:
        """What the dense statistics pass of the next forward (real-token flags `valid` [N])
        counts along where it runs natively: the distributions, with room the sample's probe,
        on a forward the health check samples each token's L0 (`staged`:
        `Distributions.counts_for`), and the history's rows' top-k. None where the torch path
        runs: nothing would ride, and staged counts would be made for nothing."""
        if not self.backend.native_statistics(self.device):
            return None
        n = valid.shape[0]
        wanted = self.fuse_samples and (self.examples.per_feature or self.samples.per_feature)
        probe = self.samples.probe(n) if wanted else None
        l0 = (torch.zeros(n, dtype=torch.int32, device=self.device)
              if self.health.is_due(self.config.health_every) else None)
        counts = self.distributions.counts_for(n, staged)
        tops = self.history.row_tops(valid)
        if counts is None and probe is None and l0 is None and tops is None:
            return None
        return StatisticsRider(counts, probe, l0, tops=tops)

    def record(self, features: DenseFeatures | SparseFeatures, valid: Tensor, pos: Tensor,
               batch: int, tokens: int, request_id: str, token_ids: Tensor | None = None,
               maxima: RowMaxima | None = None, codes: tuple[int, int] | None = None,
               rider: StatisticsRider | None = None) -> None:
        """Record one pass (its statistics already folded in) in the history, the examples,
        the distributions and the totals. `token_ids` [batch * tokens], when known;
        `maxima`: the pass's row maxima if the statistics pass gave them; `codes`: from
        `request_codes`, taken before the merge (else taken now); `rider`: what the
        statistics pass counted along (`stats_rider`)."""
        history_code, example_code = codes if codes is not None else (None, None)
        rows = torch.arange(batch, device=self.device).repeat_interleave(tokens)
        if token_ids is not None:
            token_ids = token_ids.to(self.device, torch.int64, non_blocking=True)
        self.history.write(features, valid, rows, pos, request_id, time.time(), token_ids,
                           history_code, None if rider is None else rider.tops)
        context = None
        if self.examples.per_feature or self.samples.per_feature:
            context = self.examples.context(request_id, valid, token_ids, batch, tokens)
        if example_code is None:
            example_code = self.examples.code_of(request_id)
        self.examples.update(features, valid, pos, batch, tokens, request_id, token_ids,
                             self.config.threshold, maxima, example_code, context)
        # One read of a dense CPU forward serves the statistics, the distributions and the
        # sample: the statistics pass finds the sample's candidates, the sample folds them.
        probe = None if rider is None else rider.probe
        try:
            self.distributions.update(features, valid, self.config.threshold, rider)
        finally:
            if context is not None:
                self.samples.update_sample(features, valid, pos, batch, tokens,
                                           self.config.threshold, context, example_code, probe)
            else:
                self.samples.rows_seen += batch * tokens
        self.cofiring.update(features, valid, self.config.threshold)
        real = valid.sum()
        self.tokens += real
        self.active_tokens += real
        if self.health.due(self.config.health_every):
            counted = rider is not None and rider.counted and rider.l0 is not None
            self.health.observe_l0(features, valid, self.config.threshold,
                                   rider.l0 if counted else None)
        self.watch_set.record(features, valid, batch, tokens, pos, request_id, token_ids)
        self.forward_passes += 1

    # ---- operations -------------------------------------------------------------------------

    def reconfigure(self, new: MonitorConfig) -> None:
        """Apply a validated configuration: resize the history (newest records kept), carry
        co-firing counts of features still selected, restart threshold statistics."""
        old = self.config
        if (new.history_size, new.top_k, new.features) != (
            old.history_size, old.top_k, old.features
        ):
            self.history = self.history.resized(new.history_size, new.top_k, new.features or ())
        if new.selected != old.selected:
            self.cofiring = self.cofiring.reselected(new.selected)
        if (new.examples_per_feature, new.context_window) != (
            old.examples_per_feature, old.context_window
        ):
            self.examples = self.examples.resized(new.examples_per_feature, new.context_window)
            self.examples.holders = [self.samples]
        if new.sample_seed != old.sample_seed:
            self.samples = self._new_samples(new, self.device)
        elif (new.samples_per_feature, new.context_window) != (
            old.samples_per_feature, old.context_window
        ):
            self.samples = self.samples.resized(new.samples_per_feature, new.context_window)
            self.samples.names = self.examples.names
            self.examples.holders = [self.samples]
        if new.distributions != old.distributions:
            self.distributions = Distributions(self.d_sae, self.device, new.distributions)
        if new.threshold != old.threshold:
            self.state_parts().reset(Event.THRESHOLD)
        self.config = new

    def state_parts(self) -> StateRegistry:
        """The recorded state, part by part (see `registry`): the one list that saving, sync,
        the resets and the memory figures read; `extra_parts` come last."""
        return StateRegistry([self.stats, self.history,
                              LegacyValueHistograms(len(self.config.selected)), self.cofiring,
                              self.distributions, self.examples, self.samples, self.health,
                              self.positions,
                              RecordingTotals(self), *self.extra_parts])

    def reset_statistics(self) -> None:
        """Zero every statistic and total (the history stays)."""
        self.state_parts().reset(Event.STATISTICS)
        self.costs.reset()  # not recorded state: the time monitoring took

    def clear_history(self) -> int:
        """Empty the history and forget request positions; returns the records cleared."""
        cleared = self.history.count()
        self.state_parts().reset(Event.HISTORY)
        return cleared

    def device_bytes(self) -> dict[str, int]:
        """Device memory held, per part (the TopK table lives on the host, counted too; the
        watches are not recorded state, but hold memory)."""
        return {**self.state_parts().memory_bytes(),
                "watches": sum(w.nbytes for w in self.watches)}

    def feature_index(self, features: list[int] | None) -> Tensor:
        """`features` (checked), else the monitored features, else all, as a device index."""
        if features is None:
            features = self.config.features
        if features is None:
            return torch.arange(self.d_sae, device=self.device)
        checked = feature_list("features", self.d_sae)(features, self.d_sae)
        return torch.tensor(checked, dtype=torch.int64, device=self.device)

    # ---- SnapshotSource ---------------------------------------------------------------------

    def device_totals(self) -> DeviceTotals:
        """Tokens recorded, records held, sparse indices dropped, records overwritten (device
        scalars; tokens and dropped indices include the other ranks' as of the last sync)."""
        tokens, dropped = self.tokens, self.stats.dropped_indices
        if self.remote is not None:
            tokens, dropped = tokens + self.remote.tokens, dropped + self.remote.dropped_indices
        written = self.history.written
        return DeviceTotals(tokens, written.clamp_max(self.history.size), dropped,
                            (written - self.history.size).clamp_min(0))

    def seen_active_tokens(self) -> Tensor:
        """Tokens since the threshold was set, here plus the other ranks' as of the last sync
        (int64 device scalar): what every reader of the active counts divides by (L0 mean,
        drift)."""
        if self.remote is None:
            return self.active_tokens
        return self.active_tokens + self.remote.active_tokens

    @property
    def total_forward_passes(self) -> int:
        """Forward passes recorded here, plus the other ranks' as of the last sync."""
        return self.forward_passes + (self.remote.forward_passes if self.remote else 0)

    def ranked(self, metric: str, k: int, among: list[int] | None = None) -> Tensor:
        """Indices of the top-k monitored features (of `among`, if given) by `metric`, stable
        on ties."""
        candidates = None if self.config.features is None else self.feature_index(None)
        if among is not None:
            monitored = set(self.config.features) if self.config.features is not None else None
            keep = [f for f in among if monitored is None or f in monitored]
            candidates = torch.tensor(keep, dtype=torch.int64, device=self.device)
        return rank(self.stats, candidates, metric, k, self.backend)

    def metric(self, name: str) -> Tensor:
        """One per-feature metric, float64 [d_sae]."""
        return self.stats.metric(name)

    def metrics_at(self, names: tuple[str, ...], index: Tensor) -> Tensor:
        """The metrics `names` of the features `index`, float64 [len(names), len(index)]."""
        return self.stats.metrics_at(names, index)

    def firing_summary(self) -> Tensor:
        """The frequency histogram's bins and the counts over all features, computed once for
        everything that reads them (`firing.firing_summary`)."""
        return firing_summary(self.stats.active_count, self.stats.count,
                              self.config.rare_floor, self.backend)

    def value_histograms(self) -> ValueHistogramCounts:
        """The selected features' distributions (zeros while they are off)."""
        return ValueHistogramCounts(*self.distributions.snapshot_rows(self.config.selected))

    def cofiring_top(self, k: int) -> CoFiringTop:
        """What each selected feature fires with most (`cofiring_ranking.cofiring_top`)."""
        return cofiring_top(self.cofiring, k)

    def history_tail(self, records: int) -> HistoryTail:
        """The newest `records` history slots."""
        return self.history.gather_last(records)

    def example_tokens(self, index: Tensor) -> Tensor:
        """The token of each kept example of the features `index` (see `centre_tokens`)."""
        return self.examples.centre_tokens(index)

    def examples_of(self, features: tuple[int, ...], k: int) -> ExampleSlices:
        """The best `k` kept examples of `features`."""
        ex = self.examples
        index = torch.tensor(features, dtype=torch.int64, device=self.device)
        k = min(k, ex.per_feature)
        columns = [t.index_select(0, index)[:, :k] for t in ex.record_tensors()]
        return ExampleSlices(features, columns, ex.window, ex.names.name)

    def samples_of(self, features: tuple[int, ...], k: int) -> ExampleSlices:
        """The first `k` sampled activating tokens of `features` (see `samples`)."""
        sa = self.samples
        view = sa.record_view(torch.tensor(features, dtype=torch.int64, device=self.device))
        k = min(k, sa.per_feature)
        columns = [view[n][:, :k] for n in ("value", "request", "row", "position", "tokens",
                                            "acts")]
        return ExampleSlices(features, columns, sa.window, sa.request_name)
