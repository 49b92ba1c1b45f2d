"""FeatureMonitor: exact device-side feature statistics, a ring-buffer history, 8 operations."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .config import MonitorConfig, _feature_list, check_int
from .features import DenseFeatures, SparseFeatures
from .fused import FusedEncoder
from .histograms import ValueHistograms
from .history import HistoryRing
from .kernel import MomentsKernel
from .positions import RequestPositions
from .schemas import (
    ActivationRecord,
    FeatureStatistics,
    HistoryResponse,
    MonitorState,
    Snapshot,
    StatisticsResponse,
    TopFeaturesResponse,
)
from .stats import METRICS, RunningStats
from .subscription import Subscription, check_snapshot_options

Tensor = torch.Tensor

HISTORY_LIMIT_RANGE = (1, 100_000)
TOP_FEATURES_K_RANGE = (1, 1000)

SnapshotCallback = Callable[[Snapshot], None]
EventCallback = Callable[[str, MonitorState], None]


def sae_width(sae: Any) -> int:
    """The number of features of an SAE-like object (`d_sae`, `cfg.d_sae` or `W_enc`'s width)."""
    cfg = getattr(sae, "cfg", None)
    for candidate in (getattr(sae, "d_sae", None), getattr(cfg, "d_sae", None)):
        if isinstance(candidate, int) and candidate > 0:
            return candidate
    w_enc = getattr(sae, "W_enc", None)
    if isinstance(w_enc, Tensor) and w_enc.dim() == 2:
        return int(w_enc.shape[1])
    raise TypeError(f"cannot tell the width of {type(sae).__name__}: give it a d_sae attribute")


def _is_own_sae(sae: Any) -> bool:
    from .sae import SparseAutoencoder

    return isinstance(sae, SparseAutoencoder)


def _has_sparse_encode(sae: Any) -> bool:
    """Our TopK SAEs give (indices, values) directly."""
    return _is_own_sae(sae) and sae.architecture == "topk"


class FeatureMonitor:
    """Records which SAE features fire and keeps exact per-feature statistics on the device.

    Feed it with `on_activation(acts)` or hook it onto a model with `attach`. All state lives on
    the activations' device and the hot path never reads a value back to the host; queries and
    snapshots do the copying.
    """

    def __init__(
        self,
        d_sae: int,
        *,
        device: torch.device | str | None = None,
        features: list[int] | None = None,
        history_size: int = 100,
        top_k: int | None = None,
        threshold: float = 0.0,
        throttle_ms: float = 100.0,
        enabled: bool = True,
        selected: list[int] | tuple[int, ...] = (),
        compile: bool | None = None,
    ) -> None:
        if not isinstance(d_sae, int) or isinstance(d_sae, bool) or d_sae < 1:
            raise ValueError(f"d_sae must be a positive int, got {d_sae!r}")
        self.d_sae = d_sae
        self._config = MonitorConfig().replace(
            d_sae, features=features, history_size=history_size,
            top_k=min(10, d_sae) if top_k is None else top_k,
            threshold=threshold, throttle_ms=throttle_ms, enabled=enabled, selected=selected,
        )
        self._lock = threading.RLock()
        self._device_fixed = device is not None
        self._kernel = MomentsKernel(compile)
        self._fused = FusedEncoder(self._kernel)
        self._positions = RequestPositions()
        self._request = contextvars.ContextVar(f"featmon_request_{id(self)}", default=None)
        self._auto_ids = itertools.count()
        self._sequence = itertools.count(1)
        self._forward_passes = 0
        self._errors = 0
        self._last_error: str | None = None
        self._hooks: list[Any] = []
        self._hook_point: str | None = None
        self.sae: Any = None
        self._snapshot_subscribers: list[Subscription] = []
        self._event_subscribers: list[EventCallback] = []
        self._throttle: Any = None
        self._widget: Any = None
        self._allocate(torch.device(device) if device is not None else torch.device("cpu"))

    @classmethod
    def for_sae(cls, sae: Any, **config: Any) -> FeatureMonitor:
        """A monitor as wide as `sae`, on its device unless `device` is given."""
        if "device" not in config:
            param = next(iter(getattr(sae, "parameters", lambda: iter(()))()), None)
            if param is not None:
                config["device"] = param.device
        monitor = cls(sae_width(sae), **config)
        monitor.sae = sae
        return monitor

    # ---- device state ---------------------------------------------------------------------

    def _allocate(self, device: torch.device) -> None:
        cfg = self._config
        self.device = device
        self._stats = RunningStats(self.d_sae, device, self._kernel)
        self._history = HistoryRing(cfg.history_size, cfg.top_k, cfg.features or (), device)
        self._values = ValueHistograms(cfg.selected, device)
        self._tokens = torch.zeros((), dtype=torch.int64, device=device)
        now = time.time()
        self._since = now
        self._active_since = now

    def _adopt_device(self, device: torch.device) -> None:
        """Follow the activations' device while nothing is recorded; afterwards keep ours."""
        if device == self.device or self._device_fixed:
            return
        if self._forward_passes == 0:
            self._allocate(device)
        self._device_fixed = True

    # ---- requests ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def request(self, request_id: str) -> Iterator[str]:
        """Tag every forward pass inside the block with `request_id`; positions continue."""
        if not isinstance(request_id, str) or not request_id:
            raise ValueError(f"request_id must be a non-empty string, got {request_id!r}")
        token = self._request.set(request_id)
        try:
            yield request_id
        finally:
            self._request.reset(token)

    def current_request(self) -> str:
        """The active request id, or a fresh automatic one (`auto-N`) for one forward pass."""
        return self._request.get() or f"auto-{next(self._auto_ids)}"

    # ---- hot path ---------------------------------------------------------------------------

    def on_activation(
        self,
        acts: Tensor,
        request_id: str | None = None,
        positions: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> None:
        """Record one forward pass's features `acts` [..., d_sae].

        Leading dims are [batch, tokens] (one dim: tokens of one sequence). `mask` (nonzero =
        real token) may be longer than the tokens: its last columns belong to this pass.
        `positions` overrides the automatic ones. Bad input raises and records nothing.
        """
        if not self._config.enabled:
            return
        if not isinstance(acts, Tensor):
            raise TypeError(f"acts must be a torch.Tensor, got {type(acts).__name__}")
        if acts.dim() == 0 or acts.shape[-1] != self.d_sae:
            raise ValueError(f"acts must be [..., d_sae={self.d_sae}], got {tuple(acts.shape)}")
        request_id = request_id or self.current_request()
        batch, tokens = _batch_tokens(acts.shape[:-1])
        with self._lock, torch.no_grad():
            self._adopt_device(acts.device)
            acts = acts.to(self.device, non_blocking=True)
            pos, valid = self._positions_for(request_id, batch, tokens, positions, mask)
            flat = acts.reshape(batch * tokens, self.d_sae)
            # Without a mask every row counts, and the kernel can skip a select per value.
            self._stats.update(flat, None if mask is None else valid, self._config.threshold)
            self._apply(DenseFeatures(flat), valid, pos, batch, tokens, request_id)

    def on_sparse_activation(
        self,
        indices: Tensor,
        values: Tensor,
        request_id: str | None = None,
        positions: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> None:
        """Record a TopK SAE's output in sparse form: `indices`, `values` [..., k] (every other
        feature is 0; indices distinct within a token). Same statistics as `on_activation` of
        the dense tensor, in O(k) instead of O(d_sae) work per token.
        """
        if not self._config.enabled:
            return
        for name, t in (("indices", indices), ("values", values)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if indices.shape != values.shape or indices.dim() == 0:
            raise ValueError(f"indices {tuple(indices.shape)} and values "
                             f"{tuple(values.shape)} must have one shape [..., k]")
        if indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise TypeError(f"indices must be integers, got {indices.dtype}")
        request_id = request_id or self.current_request()
        batch, tokens = _batch_tokens(indices.shape[:-1])
        with self._lock, torch.no_grad():
            self._adopt_device(values.device)
            pos, valid = self._positions_for(request_id, batch, tokens, positions, mask)
            self._record_sparse(indices, values, valid, pos, batch, tokens, request_id)

    def _record_sparse(self, indices: Tensor, values: Tensor, valid: Tensor, pos: Tensor,
                       batch: int, tokens: int, request_id: str) -> None:
        k = indices.shape[-1]
        features = SparseFeatures(indices.to(self.device).reshape(batch * tokens, k),
                                  values.to(self.device).reshape(batch * tokens, k), self.d_sae)
        self._stats.update_sparse(features.indices, features.values, valid,
                                  self._config.threshold)
        self._apply(features, valid, pos, batch, tokens, request_id)

    def encode_and_record(self, sae: Any, x: Tensor, request_id: str,
                          mask: Tensor | None = None, position_ids: Tensor | None = None) -> None:
        """Encode a layer output `x` [..., d_in] with `sae` and record it (used by hooks).

        `position_ids` are the model's own ([batch or 1, tokens]); with them, tokens a request
        already recorded (a re-fed prefix) are skipped. Our own SAE class runs encode and
        statistics as one compiled graph.
        """
        if not self._config.enabled:
            return
        d_in = getattr(sae, "d_in", None)
        if isinstance(d_in, int) and x.dim() >= 2 and x.shape[-1] != d_in \
                and x.shape[-2] * x.shape[-1] == d_in:
            x = x.flatten(-2)  # per-head outputs ([..., heads, d_head]) of a hook_z SAE
        batch, tokens = _batch_tokens(x.shape[:-1])
        with self._lock, torch.no_grad():
            self._adopt_device(x.device)
            x = x.to(self.device, non_blocking=True)
            pos, valid = self._positions_for(request_id, batch, tokens, None, mask,
                                             position_ids)
            if _has_sparse_encode(sae):
                # A TopK SAE's output is k values per token: record it without densifying.
                indices, values = sae.encode_sparse(x)
                self._record_sparse(indices, values, valid, pos, batch, tokens, request_id)
                return
            rows = None if mask is None and position_ids is None else valid  # None: all rows
            flat, shift, moments = self._fused(
                sae, x, rows, self._stats.mean, self._stats.count, self._config.threshold,
                fuse=_is_own_sae(sae),
            )
            if flat.shape[-1] != self.d_sae:
                raise ValueError(f"SAE gave {flat.shape[-1]} features; monitor has {self.d_sae}")
            self._stats.merge(shift, moments)
            self._apply(DenseFeatures(flat), valid, pos, batch, tokens, request_id)

    def _positions_for(self, request_id: str, batch: int, tokens: int, positions: Tensor | None,
                       mask: Tensor | None, position_ids: Tensor | None = None
                       ) -> tuple[Tensor, Tensor]:
        if mask is not None:
            mask = _as_batch_mask(mask, batch, tokens).to(self.device)
        if positions is None:
            pos, valid = self._positions.assign(request_id, batch, tokens, mask, self.device,
                                                position_ids)
        else:
            pos = positions.to(self.device, torch.int64).reshape(batch, tokens)
            valid = (mask[:, -tokens:] != 0 if mask is not None else
                     torch.ones(batch, tokens, dtype=torch.bool, device=self.device))
        return pos.reshape(-1), valid.reshape(-1)

    def _apply(self, features: DenseFeatures | SparseFeatures, valid: Tensor, pos: Tensor,
               batch: int, tokens: int, request_id: str) -> None:
        """Record one pass (its statistics already folded in) in the history, the value
        histograms and the totals. Called with the lock held."""
        cfg = self._config
        rows = torch.arange(batch, device=self.device).repeat_interleave(tokens)
        self._history.write(features, valid, rows, pos, request_id, time.time())
        self._values.update(features, valid, cfg.threshold)
        self._tokens += valid.sum()
        self._forward_passes += 1
        if self._throttle is not None:
            self._throttle.poke()

    # ---- hooks ------------------------------------------------------------------------------

    def attach(self, model: torch.nn.Module, hook_point: str, sae: Any = None) -> Any:
        """Hook `sae` onto `model`'s submodule `hook_point`; returns a removable handle."""
        from .hooks import MonitorHook

        sae = sae if sae is not None else self.sae
        if sae is None:
            raise ValueError("attach needs an SAE: pass sae=... or build with for_sae(sae)")
        width = sae_width(sae)
        if width != self.d_sae:
            raise ValueError(f"SAE has d_sae={width}, monitor has d_sae={self.d_sae}")
        hook = MonitorHook(self, model, hook_point, sae)
        with self._lock:
            self._hooks.append(hook)
            self._hook_point = hook_point
            self.sae = sae
        return hook

    def _hook_removed(self, hook: Any) -> None:
        with self._lock:
            if hook in self._hooks:
                self._hooks.remove(hook)

    def report_hook_error(self, hook: Any, exc: BaseException) -> None:
        """Count a monitoring failure inside a hook; the hook then stops monitoring."""
        with self._lock:
            self._errors += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
        warnings.warn(
            f"featmon_widget: monitoring failed at {getattr(hook, 'hook_point', '?')} and was "
            f"stopped there ({self._last_error}); the model's forward is unaffected",
            RuntimeWarning, stacklevel=3,
        )
        self._emit("error")

    # ---- the 8 operations -------------------------------------------------------------------

    @property
    def state(self) -> MonitorState:
        """Configuration, attachment, totals and errors."""
        with self._lock:
            return self._state(int(self._tokens), self._history.count(),
                               int(self._stats.dropped_indices))

    def _state(self, total_tokens: int, history_count: int,
               dropped_indices: int) -> MonitorState:
        """The state, given the totals that live on the device. Lock held."""
        cfg = self._config
        return MonitorState(
            enabled=cfg.enabled,
            sae_attached=self.sae is not None,
            hook_attached=bool(self._hooks),
            hook_point=self._hook_point,
            sae_id=_sae_id(self.sae),
            d_sae=self.d_sae,
            monitored_features=list(cfg.features) if cfg.features is not None else None,
            selected_features=list(cfg.selected),
            history_size=cfg.history_size,
            history_count=history_count,
            top_k=cfg.top_k,
            threshold=cfg.threshold,
            throttle_ms=cfg.throttle_ms,
            total_tokens=total_tokens,
            forward_passes=self._forward_passes,
            since=self._since,
            active_since=self._active_since,
            device=str(self.device),
            errors=self._errors,
            last_error=self._last_error,
            dropped_indices=dropped_indices,
        )

    @property
    def config(self) -> MonitorConfig:
        """The current configuration (immutable)."""
        return self._config

    def configure(self, **changes: Any) -> MonitorState:
        """Change only the given settings: enabled, features, history_size, top_k, threshold,
        throttle_ms, selected. Invalid values raise and change nothing.

        Resizing the history keeps the newest records that fit. A new threshold restarts the
        threshold-dependent statistics (active_count, mean_active; see `active_since`).
        """
        with self._lock:
            new = self._config.replace(self.d_sae, **changes)
            old = self._config
            if (new.history_size, new.top_k, new.features) != (
                old.history_size, old.top_k, old.features
            ):
                self._history = self._history.resized(new.history_size, new.top_k,
                                                       new.features or ())
            if new.selected != old.selected:
                self._values = self._values.reselected(new.selected)
            if new.threshold != old.threshold:
                self._stats.reset_active()
                self._values = ValueHistograms(new.selected, self.device)
                self._active_since = time.time()
            self._config = new
            if self._throttle is not None:
                self._throttle.interval_s = new.throttle_ms / 1000
        self._emit("configured")
        return self.state

    def enable(self, flag: bool = True) -> MonitorState:
        """Turn recording on or off; statistics and history are kept."""
        return self.configure(enabled=flag)

    def get_history(self, limit: int = 50, request_id: str | None = None) -> HistoryResponse:
        """Recorded tokens, newest first; `request_id` matches a request or a `request/row`."""
        check_int("limit", limit, *HISTORY_LIMIT_RANGE)
        with self._lock:
            rows = self._history.read()
            explicit = self._history.explicit
            threshold = self._config.threshold
        matches: list[ActivationRecord] = []
        for i in range(len(rows) - 1, -1, -1):
            rid, row = rows.request_ids[i], rows.rows[i]
            if request_id is not None and request_id not in (rid, f"{rid}/{row}"):
                continue
            matches.append(ActivationRecord(
                timestamp=rows.timestamps[i], request_id=rid, row=row,
                token_position=rows.positions[i],
                activations=dict(zip(explicit, rows.values[i], strict=True)),
                top_k=[(f, v) for f, v in zip(rows.top_idx[i], rows.top_val[i], strict=True)
                       if f >= 0 and v > threshold],
            ))
        return HistoryResponse(records=matches[:limit], total=len(matches))

    def clear_history(self) -> int:
        """Empty the history; returns how many records were cleared."""
        with self._lock:
            cleared = self._history.clear()
            self._positions.clear()
        self._emit("history_cleared")
        return cleared

    def get_statistics(self, features: list[int] | None = None) -> StatisticsResponse:
        """Statistics of `features` (default: the monitored features, or all)."""
        with self._lock:
            index = self._feature_index(features)
            rows = self._rows(index)
            total = int(self._tokens)
            since = self._since
        return StatisticsResponse(features=rows, total_activations=total, since=since)

    def reset_statistics(self) -> int:
        """Zero every statistic and total; returns the number of monitored features reset."""
        with self._lock:
            self._stats.reset()
            self._values = ValueHistograms(self._config.selected, self.device)
            self._tokens.zero_()
            self._forward_passes = 0
            now = time.time()
            self._since = now
            self._active_since = now
            n = len(self._config.features) if self._config.features is not None else self.d_sae
        self._emit("statistics_reset")
        return n

    def get_top_features(self, k: int = 10, metric: str = "mean") -> TopFeaturesResponse:
        """The k monitored features ranked by `metric`, computed on the device.

        Metrics: mean, mean_active, max, min, active_ratio, count, active_count, std. Ties go to
        the lower index; features where the metric is undefined come last.
        """
        check_int("k", k, *TOP_FEATURES_K_RANGE)
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        with self._lock:
            index = self._ranked(metric, k)
            rows = self._rows(index)
        return TopFeaturesResponse(metric=metric, features=rows)

    # ---- snapshots and events ---------------------------------------------------------------

    def snapshot(self, table_rows: int = 50, metric: str = "mean", records: int = 20) -> Snapshot:
        """A bounded summary for the frontend (see `Snapshot`)."""
        from .snapshot import MAX_RECORDS, finish_snapshot, gather_snapshot

        check_snapshot_options(table_rows, metric, records, MAX_RECORDS)
        with self._lock:  # only enqueue device work and copies here; wait after releasing
            parts = gather_snapshot(self, next(self._sequence), table_rows, metric, records)
        return finish_snapshot(parts)

    def subscribe(self, callback: SnapshotCallback, *, table_rows: int = 50,
                  metric: str = "mean", records: int = 20) -> Subscription:
        """Deliver snapshots to `callback` at most every throttle_ms, and always after the last
        change of a burst (from a background thread). `cancel()` the result to stop."""
        from .snapshot import MAX_RECORDS
        from .throttle import Throttle

        check_snapshot_options(table_rows, metric, records, MAX_RECORDS)
        sub = Subscription(callback, table_rows, metric, records,
                           _cancel=self._unsubscribe, _poke=self._poke)
        with self._lock:
            self._snapshot_subscribers.append(sub)
            if self._throttle is None:
                self._throttle = Throttle(self._deliver_snapshot, self._config.throttle_ms / 1000)
        self._poke()
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._snapshot_subscribers:
                self._snapshot_subscribers.remove(sub)

    def _poke(self) -> None:
        throttle = self._throttle
        if throttle is not None:
            throttle.poke()

    def on_state_change(self, callback: EventCallback) -> Callable[[], None]:
        """Call `callback(event, state)` after configure/enable/clear/reset and hook errors."""
        with self._lock:
            self._event_subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._event_subscribers:
                    self._event_subscribers.remove(callback)
        return unsubscribe

    def widget(self, **options: Any) -> Any:
        """This monitor's live `MonitorWidget` (created once; re-running a cell that calls this
        shows the same widget instead of starting another subscription)."""
        from .widget import MonitorWidget

        with self._lock:
            live = self._widget is not None and getattr(self._widget, "comm", None) is not None
            if not live:
                self._widget = MonitorWidget(self, **options)
            return self._widget

    def close(self) -> None:
        """Remove hooks and stop the delivery thread."""
        for hook in list(self._hooks):
            hook.remove()
        if self._throttle is not None:
            self._throttle.close()

    def _deliver_snapshot(self) -> None:
        with self._lock:
            subscribers = list(self._snapshot_subscribers)
        built: dict[tuple[int, str, int], Snapshot] = {}  # one build per distinct option set
        for sub in subscribers:
            options = sub.options()
            if options not in built:
                built[options] = self.snapshot(*options)
            sub.callback(built[options])

    def _emit(self, event: str) -> None:
        with self._lock:
            subscribers = list(self._event_subscribers)
            throttle = self._throttle
        if subscribers:
            state = self.state
            for callback in subscribers:
                callback(event, state)
        if throttle is not None:
            throttle.poke()

    # ---- helpers (lock held) ----------------------------------------------------------------

    def _feature_index(self, features: list[int] | None) -> Tensor:
        if features is None:
            features = self._config.features
        if features is None:
            return torch.arange(self.d_sae, device=self.device)
        checked = _feature_list("features", self.d_sae)(features, self.d_sae)
        return torch.tensor(checked, dtype=torch.int64, device=self.device)

    def _ranked(self, metric: str, k: int) -> Tensor:
        """Indices of the top-k monitored features by `metric`, stable on ties."""
        index = self._feature_index(None).sort().values  # ties go to the lower index
        values = self._stats.metric(metric).index_select(0, index)
        key = torch.where(torch.isnan(values), float("-inf"), values)
        order = torch.sort(key, descending=True, stable=True).indices[:k]
        return index.index_select(0, order)

    def _rows(self, index: Tensor) -> list[FeatureStatistics]:
        s = self._stats
        cols = torch.stack([
            s.count.to(torch.float64), s.active_count.to(torch.float64), s.active_ratio(),
            s.metric("mean"), s.mean_active(), s.metric("std"), s.metric("min"), s.metric("max"),
            s.nan_count.to(torch.float64),
        ]).index_select(1, index).cpu()
        count, active, ratio, mean, mean_active, std, mn, mx, nans = cols.tolist()
        return [
            FeatureStatistics(
                feature_idx=f, count=int(count[i]), active_count=int(active[i]),
                active_ratio=_opt(ratio[i]), mean=_opt(mean[i]), mean_active=_opt(mean_active[i]),
                std=_opt(std[i]), min=_opt(mn[i]), max=_opt(mx[i]), nan_count=int(nans[i]),
            )
            for i, f in enumerate(index.cpu().tolist())
        ]

    def __repr__(self) -> str:
        cfg = self._config
        return (f"FeatureMonitor(d_sae={self.d_sae}, device={str(self.device)!r}, "
                f"enabled={cfg.enabled}, history_size={cfg.history_size}, top_k={cfg.top_k})")


def _batch_tokens(lead: tuple[int, ...] | torch.Size) -> tuple[int, int]:
    """[batch, tokens] from the leading dims: one dim is one sequence; more fold into batch."""
    if len(lead) == 0:
        return 1, 1
    if len(lead) == 1:
        return 1, int(lead[0])
    return int(math.prod(lead[:-1])), int(lead[-1])


def _as_batch_mask(mask: Tensor, batch: int, tokens: int) -> Tensor:
    """`mask` as [batch, L] with L >= tokens, or a ValueError naming both shapes."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    lead = mask.shape[:-1] if mask.dim() > 1 else torch.Size([1])
    if math.prod(lead) != batch or mask.shape[-1] < tokens:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit {batch} sequence(s) "
                         f"of {tokens} token(s)")
    return mask.reshape(batch, mask.shape[-1])


def _opt(value: float) -> float | None:
    return None if math.isnan(value) else value


def _sae_id(sae: Any) -> str | None:
    if sae is None:
        return None
    name = getattr(sae, "name", None) or getattr(getattr(sae, "cfg", None), "neuronpedia_id", None)
    return str(name) if name else type(sae).__name__
