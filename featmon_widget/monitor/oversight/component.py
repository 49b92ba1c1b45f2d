"""The questions a monitor left on answers live: is the SAE still faithful (`health`), has the
traffic moved (`drift`), and tell me — or stop generating — when a feature fires (`watch`). A
base class of `FeatureMonitor`, kept apart so the facade stays a list of the in-process
operations."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ...checks import check_int
from ...live.delivery import LiveDelivery
from ...snapshot.transfer import start_copy
from ...types import DriftResponse, HealthResponse
from ..attachments import Attachments
from ..config import THRESHOLD_LIMIT, MonitorConfig, feature_list, real_in_range
from ..record.recording import Recording
from .drift import Reference, drift_response, drift_summary, reference_from
from .watch import Watch, WatchCallback, hits_from, stopping_criteria

# Features one watch may name, and hits kept for a watch without a callback.
MAX_WATCHED_FEATURES = 256
RECENT_HITS = 1000
# In a snapshot: watched features marked, and hot / cold features of the drift view.
MAX_SNAPSHOT_WATCHED = 64
DRIFT_ROWS = 5


class Oversight:
    """Health, drift and watches (see module doc); `FeatureMonitor` provides the state."""

    _lock: threading.RLock
    _recording: Recording
    _attached: Attachments
    _live: LiveDelivery
    d_sae: int
    config: MonitorConfig
    # Per monitor once set (these class values are the defaults): the drift reference (None,
    # a Reference, or a live monitor, read at each get_drift), and whether the delivery thread
    # already hands out watch hits.
    _reference: Any = None
    _watch_task: bool = False

    # ---- health -----------------------------------------------------------------------------

    def get_health(self) -> HealthResponse:
        """L0, dead and ultra-rare features, and reconstruction quality on sampled forwards
        (`health_every`; definitions in `monitor.health` and the README)."""
        return self._oversight_parts(with_drift=False)()[0]

    def _oversight_parts(self, with_drift: bool = True, firing: torch.Tensor | None = None
                         ) -> Callable[[], tuple[HealthResponse, dict[str, Any]]]:
        """Under the lock: start copying what the health strip, the drift view and the watch
        marks need; the function returned waits for the copies (without the lock) and gives
        the full `HealthResponse` and the snapshot's `oversight` part. `firing`: the firing
        summary the snapshot being built already holds (computed here when None)."""
        with self._lock:
            rec, cfg = self._recording, self.config
            health = rec.health
            firing = rec.firing_summary() if firing is None else firing
            wait = start_copy([health.summary_parts(firing, rec.active_tokens),
                               health.l0_counts])
            watched = sorted({f for w in rec.watches for f in w.features})
            hits = sum(w.delivered for w in rec.watches)
            reference = self._reference if with_drift else None

        def finish() -> tuple[HealthResponse, dict[str, Any]]:
            summary, l0 = wait()
            report = health.report_from(summary.tolist(), l0.tolist(), self.d_sae,
                                        cfg.rare_floor, cfg.health_every)
            drift = None
            if reference is not None:
                ref = reference if isinstance(reference, Reference) else \
                    reference_from(reference, self.d_sae)
                drift = drift_summary(*self.reference_counts(), ref, DRIFT_ROWS)
            return report, {"health": _health_fields(report), "drift": drift,
                            "watched": watched[:MAX_SNAPSHOT_WATCHED], "watch_hits": hits}

        return finish

    # ---- drift ------------------------------------------------------------------------------

    def reference_counts(self) -> tuple[torch.Tensor, float]:
        """Per-feature active counts (float64, on the host) and the tokens they are out of:
        what another monitor compares itself with (`set_reference(this_monitor)`)."""
        with self._lock:
            rec = self._recording
            active = rec.stats.active_count.to("cpu", torch.float64)
            return active, float(rec.active_tokens)

    def set_reference(self, source: Any) -> str | None:
        """Compare the traffic with `source` from now on: a saved monitor's folder, another
        live `FeatureMonitor` (read again at each `get_drift`), or a SAELens
        `sparsity.safetensors` (a file or a folder holding one); `None` removes it. Returns
        what the reference is. A bad source raises and changes nothing."""
        if source is None:
            reference, described = None, None
        else:
            checked = reference_from(source, self.d_sae)
            live = hasattr(source, "reference_counts")
            reference, described = (source if live else checked), checked.source
        with self._lock:
            self._reference = reference
        return described

    def get_drift(self, k: int = 10, direction: str = "hot") -> DriftResponse:
        """The `k` features whose firing moved most against the reference: "hot" (more
        often than there) or "cold" (less), by z; with a divergence over all features."""
        check_int("k", k, 1, self.d_sae)
        with self._lock:
            reference = self._reference
        if reference is None:
            raise ValueError("no reference: call set_reference(...) first")
        if not isinstance(reference, Reference):
            reference = reference_from(reference, self.d_sae)  # a live monitor: read it now
        active, tokens = self.reference_counts()
        return drift_response(active, tokens, reference, k, direction)

    # ---- watches ----------------------------------------------------------------------------

    def watch(self, features: Iterable[int] | int, above: float | Iterable[float] | None = None,
              callback: WatchCallback | None = None) -> Watch:
        """Watch `features`: every token where one is above `above` (one threshold, or one per
        feature; default the monitor's threshold) is a hit, passed to `callback(hit)` from the
        delivery thread within `throttle_ms` (or kept in `watch.recent` without a callback).
        The hot path only writes the hit on the device. `cancel()` the result to stop."""
        listed = [features] if isinstance(features, int) else list(features)
        checked = feature_list("features", MAX_WATCHED_FEATURES)(listed, self.d_sae)
        if not checked:
            raise ValueError("watch needs at least one feature, got []")
        thresholds = _thresholds(above, len(checked), self.config.threshold)
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        with self._lock:
            rec = self._recording
            watch = Watch(checked, thresholds, callback, rec.device, self._unwatch,
                          recent=RECENT_HITS)
            rec.watches.append(watch)
            first, self._watch_task = not self._watch_task, True
        if first:
            self._live.add_task(self._deliver_watch_hits)
        return watch

    def stopping_criteria(self, watch: Watch) -> Any:
        """An HF `StoppingCriteria` (in a list, for `generate(stopping_criteria=...)`) that
        ends generation for the rows where `watch` fired during that generation."""
        if not isinstance(watch, Watch):
            raise TypeError(f"stopping_criteria needs a Watch, got {type(watch).__name__}")
        with self._lock:
            return stopping_criteria(watch)

    def _unwatch(self, watch: Watch) -> None:
        with self._lock:
            rec = self._recording
            if watch in rec.watches:
                rec.watches.remove(watch)
                rec.retired_watches.append(watch)  # its last hits are still delivered
        self._live.poke()

    def _deliver_watch_hits(self) -> None:
        """The delivery thread's task: hand every watch its new hits, oldest first."""
        with self._lock:
            rec = self._recording
            if rec.device.type == "meta":
                return  # no values to hand out
            watches = [*rec.watches, *rec.retired_watches]
            rec.retired_watches.clear()
            taken = [(w, *w.take()) for w in watches]
            token_text = self._attached.text_of()
        for watch, rows, names, lost in taken:
            watch.deliver(hits_from(rows, names, token_text), lost)

    def watch_hits(self) -> int:
        """Hits delivered so far by the active watches."""
        with self._lock:
            return sum(w.delivered for w in self._recording.watches)


def _health_fields(report: HealthResponse) -> dict[str, Any]:
    """The health strip's figures (rounded: they are for reading)."""
    def num(value: float | None, digits: int = 4) -> float | None:
        return None if value is None else float(f"{value:.{digits}g}")

    return {"l0_mean": num(report.l0_mean), "mse": num(report.mse), "fvu": num(report.fvu),
            "cosine": num(report.cosine), "dead": report.dead_features,
            "ultra_rare": report.ultra_rare_features, "rare_floor": report.rare_floor,
            "sampled_forwards": report.sampled_forwards, "health_every": report.health_every,
            "reconstruction_tokens": report.reconstruction_tokens}


def _thresholds(above: Any, n: int, default: float) -> tuple[float, ...]:
    if above is None:
        return (default,) * n
    if isinstance(above, (int, float)) and not isinstance(above, bool):
        above = [above] * n
    values = list(above)
    if len(values) != n:
        raise ValueError(f"above must be one threshold or one per feature ({n}), got "
                         f"{len(values)}")
    return tuple(real_in_range("above", v, -THRESHOLD_LIMIT, THRESHOLD_LIMIT) for v in values)
