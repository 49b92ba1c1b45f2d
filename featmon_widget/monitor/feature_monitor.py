"""FeatureMonitor: the facade. One lock, the configuration, the 8 operations; recording, queries,
snapshots and live delivery are delegated to their own modules."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from ..checks import check_int
from ..hooks import MonitorHook
from ..live.delivery import EventCallback, LiveDelivery, SnapshotCallback
from ..live.subscriptions import Subscription
from ..sae.adapter import sae_device, sae_width
from ..snapshot.build import finish_snapshot, gather_snapshot
from ..snapshot.options import SnapshotOptions, check_metric, snapshot_options
from ..snapshot.schemas import Snapshot
from ..types import (
    ExamplesResponse,
    HistoryResponse,
    MonitorState,
    StatisticsResponse,
    TopFeaturesResponse,
)
from .attachments import Attachments
from .config import MonitorConfig
from .io.component import Sharing
from .oversight.component import Oversight
from .query import queries
from .query.labels import load_labels
from .record.ingest import Ingest, check_dense, check_sparse
from .record.recording import Recording
from .record.requests import RequestContext
from .state import monitor_state
from .stats.fused import FusedEncoder
from .stats.kernels import StatisticsKernels


class FeatureMonitor(Sharing, Oversight):
    """Records which SAE features fire and keeps exact per-feature statistics on the device.

    Feed it with `on_activation(acts)` or hook it onto a model with `attach`. All state lives on
    the activations' device and the hot path never reads a value back to the host; queries and
    snapshots do the copying.
    """

    def __init__(self, d_sae: int, *, device: torch.device | str | None = None,
                 features: list[int] | None = None, history_size: int = 100,
                 top_k: int | None = None, threshold: float = 0.0, throttle_ms: float = 100.0,
                 enabled: bool = True, selected: list[int] | tuple[int, ...] = (),
                 examples_per_feature: int = 8, context_window: int = 8,
                 health_every: int = 8, rare_floor: float = 1e-5,
                 compile: bool | None = None) -> None:
        if not isinstance(d_sae, int) or isinstance(d_sae, bool) or d_sae < 1:
            raise ValueError(f"d_sae must be a positive int, got {d_sae!r}")
        self.d_sae = d_sae
        config = MonitorConfig().replace(
            d_sae, features=features, history_size=history_size,
            top_k=min(10, d_sae) if top_k is None else top_k,
            threshold=threshold, throttle_ms=throttle_ms, enabled=enabled, selected=selected,
            examples_per_feature=examples_per_feature, context_window=context_window,
            health_every=health_every, rare_floor=rare_floor)
        self._lock = threading.RLock()
        self._recording = Recording(d_sae, config, device, statistics := StatisticsKernels(compile))
        self._ingest = Ingest(self._recording, FusedEncoder(statistics))
        self._requests = RequestContext(f"featmon_request_{id(self)}")
        self._sequence = itertools.count(1)
        self._live = LiveDelivery(self._build_snapshot, lambda: self.state,
                                  config.throttle_ms / 1000)
        self._attached = Attachments()

    @classmethod
    def for_sae(cls, sae: Any, **config: Any) -> FeatureMonitor:
        """A monitor as wide as `sae`, on its device unless `device` is given."""
        config.setdefault("device", sae_device(sae))  # None: follow the activations
        monitor = cls(sae_width(sae), **config)
        monitor.sae = sae
        return monitor

    @property
    def device(self) -> torch.device:
        """Where the statistics and the history live."""
        return self._recording.device

    @property
    def config(self) -> MonitorConfig:
        """The current configuration (immutable)."""
        return self._recording.config

    # ---- input ------------------------------------------------------------------------------

    def request(self, request_id: str) -> AbstractContextManager[str]:
        """Tag every forward pass inside the block with `request_id`; positions continue."""
        return self._requests.request(request_id)

    def current_request(self) -> str:
        """The active request id, or a fresh automatic one (`auto-N`) for one forward pass."""
        return self._requests.current()

    def on_activation(self, acts: torch.Tensor, request_id: str | None = None,
                      positions: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                      token_ids: torch.Tensor | None = None) -> None:
        """Record one forward pass's features `acts` [..., d_sae].

        Leading dims are [batch, tokens] (one dim: tokens of one sequence). `mask` (nonzero =
        real token) may be longer than the tokens: its last columns belong to this pass.
        `positions` overrides the automatic ones; `token_ids` [batch, tokens] say which input
        tokens these are. Bad input raises and records nothing.
        """
        if not self.config.enabled:
            return
        check_dense(acts, self.d_sae)
        self._record(self._ingest.dense, acts, self._request_or_current(request_id),
                     positions, mask, token_ids)

    def on_sparse_activation(self, indices: torch.Tensor, values: torch.Tensor,
                             request_id: str | None = None,
                             positions: torch.Tensor | None = None,
                             mask: torch.Tensor | None = None,
                             token_ids: torch.Tensor | None = None) -> None:
        """Record a TopK SAE's output in sparse form: `indices`, `values` [..., k] (every other
        feature is 0; indices distinct within a token). Same statistics as `on_activation` of
        the dense tensor, in O(k) instead of O(d_sae) work per token.
        """
        if not self.config.enabled:
            return
        check_sparse(indices, values)
        self._record(self._ingest.sparse, indices, values, self._request_or_current(request_id),
                     positions, mask, token_ids)

    def encode_and_record(self, sae: Any, x: torch.Tensor, request_id: str,
                          mask: torch.Tensor | None = None,
                          position_ids: torch.Tensor | None = None,
                          token_ids: torch.Tensor | None = None) -> None:
        """Encode a layer output `x` [..., d_in] with `sae` and record it (used by hooks).

        `position_ids` are the model's own ([batch or 1, tokens]); with them, tokens a request
        already recorded (a re-fed prefix) are skipped. `token_ids` [batch, tokens] are the
        input tokens (ignored when they do not fit `x`). Our own SAE class runs encode and
        statistics as one fused step (see `stats.fused`).
        """
        if self.config.enabled:
            self._record(self._ingest.encoded, sae, x, request_id, mask, position_ids,
                         token_ids)

    def _request_or_current(self, request_id: str | None) -> str:
        return self.current_request() if request_id is None else request_id

    def _record(self, ingest: Callable[..., None], *args: Any) -> None:
        with self._lock, torch.no_grad(), self._recording.positions.kept_on_error():
            costs = self._recording.costs
            costs.start(self._recording.device)
            ingest(*args)
            costs.stop()
        self._live.poke()

    # ---- hooks ------------------------------------------------------------------------------

    def attach(self, model: Any, hook_point: str, sae: Any = None,
               tokenizer: Any = None) -> MonitorHook:
        """Hook `sae` onto `model`'s submodule `hook_point` (a torch module, or an nnsight
        model: its `trace` / `generate` are recorded); returns a removable handle.
        `tokenizer` (default: `model.tokenizer` if it has one) turns recorded tokens into
        text."""
        with self._lock:
            return self._attached.attach(self, self.d_sae, model, hook_point, sae, tokenizer)

    @property
    def tokenizer(self) -> Any:
        """The tokenizer that names recorded tokens (anything with `decode(ids)`), or None."""
        return self._attached.tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: Any) -> None:
        with self._lock:
            self._attached.tokenizer = tokenizer

    @property
    def sae(self) -> Any:
        """The SAE last attached (or given to `for_sae`)."""
        return self._attached.sae

    @sae.setter
    def sae(self, sae: Any) -> None:
        self._attached.sae = sae

    def hook_removed(self, hook: MonitorHook) -> None:
        """Forget a hook that detached itself (called by `MonitorHook.remove`)."""
        with self._lock:
            self._attached.removed(hook)

    def report_hook_error(self, hook: Any, exc: BaseException) -> None:
        """Count a monitoring failure inside a hook; the hook then stops monitoring."""
        with self._lock:
            self._attached.failed(hook, exc)
        self._live.emit("error")

    # ---- the 8 operations -------------------------------------------------------------------

    @property
    def state(self) -> MonitorState:
        """Configuration, attachment, totals and errors."""
        with self._lock:
            totals = self._recording.device_totals()
            return monitor_state(self._recording, self._attached, self._live,
                                 *(int(t) for t in totals),
                                 watch_hits=sum(w.delivered for w in self._recording.watches))

    def configure(self, **changes: Any) -> MonitorState:
        """Change only the given settings: enabled, features, history_size, top_k, threshold,
        throttle_ms, selected, examples_per_feature, context_window. Invalid values raise and
        change nothing.

        Resizing the history keeps the newest records that fit. A new threshold restarts the
        threshold-dependent statistics (active_count, mean_active; see `active_since`).
        """
        with self._lock:
            new = self.config.replace(self.d_sae, **changes)
            self._recording.reconfigure(new)
            self._live.set_interval(new.throttle_ms / 1000)
        self._live.emit("configured")
        return self.state

    def enable(self, flag: bool = True) -> MonitorState:
        """Turn recording on or off; statistics and history are kept."""
        return self.configure(enabled=flag)

    def get_history(self, limit: int = 50,
                    request_id: str | None = None) -> HistoryResponse:
        """Recorded tokens, newest first; `request_id` matches a request or a `request/row`."""
        check_int("limit", limit, *queries.HISTORY_LIMIT_RANGE)
        with self._lock:
            history = self._recording.history
            rows, monitored = history.read(), history.monitored
            threshold, token_text = self.config.threshold, self._attached.text_of()
        matches = queries.history_records(rows, monitored, threshold, request_id, token_text)
        return HistoryResponse(records=matches[:limit], total=len(matches))

    def clear_history(self) -> int:
        """Empty the history; returns how many records were cleared."""
        with self._lock:
            cleared = self._recording.clear_history()
        self._live.emit("history_cleared")
        return cleared

    def get_statistics(self, features: list[int] | None = None) -> StatisticsResponse:
        """Statistics of `features` (default: the monitored features, or all)."""
        with self._lock:
            rec = self._recording
            rows = queries.statistics_rows(rec.stats, rec.feature_index(features),
                                           self._attached.labels)
            total, since = int(rec.device_totals().tokens), rec.since
        return StatisticsResponse(features=rows, total_activations=total, since=since)

    def reset_statistics(self) -> int:
        """Zero every statistic and total; returns the number of monitored features reset."""
        with self._lock:
            self._recording.reset_statistics()
            features = self.config.features
        self._live.emit("statistics_reset")
        return len(features) if features is not None else self.d_sae

    def get_top_features(self, k: int = 10, metric: str = "mean") -> TopFeaturesResponse:
        """The k monitored features ranked by `metric`, computed on the device.

        Metrics: mean, mean_active, max, min, active_ratio, count, active_count, std. Ties go to
        the lower index; features where the metric is undefined come last.
        """
        check_int("k", k, *queries.TOP_FEATURES_K_RANGE)
        check_metric(metric)
        with self._lock:
            rec = self._recording
            rows = queries.statistics_rows(rec.stats, rec.ranked(metric, k), self._attached.labels)
        return TopFeaturesResponse(metric=metric, features=rows)

    def get_examples(self, feature: int, k: int | None = None) -> ExamplesResponse:
        """`feature`'s top-activating examples since the last reset (at most one per sequence
        row of a forward pass), highest first, with the tokens around each."""
        check_int("feature", feature, 0, self.d_sae - 1)
        with self._lock:
            table, token_text = self._recording.examples, self._attached.text_of()
            k = table.per_feature if k is None else check_int("k", k, 0, table.per_feature)
            examples = queries.feature_examples(table, feature, k, token_text)
            label = self._attached.labels.get(feature)
        return ExamplesResponse(feature=feature, examples=examples, label=label)

    def set_labels(self, source: Any) -> int:
        """Name features: a dict `{feature: text}`, or a JSON / JSON Lines / CSV file (e.g. a
        Neuronpedia explanations export; see `labels`). Replaces all labels (`{}` clears);
        returns how many features have one. A bad entry raises and changes nothing."""
        labels = load_labels(source, self.d_sae)
        with self._lock:
            self._attached.labels = labels
        self._live.emit("labels")
        return len(labels)

    # ---- snapshots and live delivery --------------------------------------------------------

    def snapshot(self, table_rows: int = 50, metric: str = "mean", records: int = 20,
                 search: str = "") -> Snapshot:
        """A bounded summary for the frontend (see `Snapshot`); `search` limits the table to
        the feature with that index and those whose label contains it."""
        return self._build_snapshot(snapshot_options(table_rows, metric, records, search))

    def _build_snapshot(self, options: SnapshotOptions) -> Snapshot:
        with self._lock:  # only enqueue device work and copies here; wait after releasing
            state = monitor_state(self._recording, self._attached, self._live,
                                  0, 0, 0)  # the device totals are read in finish_snapshot
            parts = gather_snapshot(self._recording, state, next(self._sequence), options,
                                    self._attached.text_of(), self._attached.labels)
            oversight = self._oversight_parts(firing=parts.firing)
        return dataclasses.replace(finish_snapshot(parts), oversight=oversight()[1])

    def subscribe(self, callback: SnapshotCallback, *, table_rows: int = 50,
                  metric: str = "mean", records: int = 20, search: str = "") -> Subscription:
        """Deliver snapshots to `callback` at most every throttle_ms, and always after the last
        change of a burst (from a background thread). `cancel()` the result to stop."""
        options = snapshot_options(table_rows, metric, records, search)
        return self._live.subscribe(callback, options)

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        """The active snapshot subscriptions (a widget holds one)."""
        return self._live.subscriptions

    def on_state_change(self, callback: EventCallback) -> Callable[[], None]:
        """Call `callback(event, state)` after configure/enable/clear/reset and hook errors."""
        return self._live.listen(callback)

    def widget(self, **options: Any) -> Any:
        """This monitor's live `MonitorWidget` (created once; re-running a cell that calls this
        shows the same widget instead of starting another subscription)."""
        from ..widget import MonitorWidget  # needs the built frontend bundle: loaded on demand

        return MonitorWidget.of(self, **options)

    def close(self) -> None:
        """Remove hooks and stop the delivery thread."""
        for hook in list(self._attached.hooks):
            hook.remove()
        self._live.close()

    def __repr__(self) -> str:
        cfg = self.config
        return (f"FeatureMonitor(d_sae={self.d_sae}, device={str(self.device)!r}, "
                f"enabled={cfg.enabled}, history_size={cfg.history_size}, top_k={cfg.top_k})")

