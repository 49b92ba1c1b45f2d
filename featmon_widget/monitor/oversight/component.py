"""The questions a monitor left on answers live: is the SAE still faithful (`health`), has the
traffic moved (`drift`), and tell me — or stop generating — when a feature fires (`watch`).
`Oversight` answers them for `FeatureMonitor`, which owns one and delegates to it."""

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
from ..stats.backend import Backend
from .drift import Reference, drift_response, drift_summary, reference_from
from .health import HealthSums, HealthTracker
from .watch import Watch, WatchCallback, hits_from, stopping_criteria

# Features one watch may name, and hits kept for a watch without a callback.
MAX_WATCHED_FEATURES = 256
# Active watches a monitor holds: each keeps a ring of WATCH_CAPACITY hits on the device
# (about 180 KB) and, with a callback, a thread of its own; one watch can name 256 features.
MAX_WATCHES = 256
RECENT_HITS = 1000
# In a snapshot: watched features marked, and hot / cold features of the drift view.
MAX_SNAPSHOT_WATCHED = 64
DRIFT_ROWS = 5


class Oversight:
    """Health, drift and watches of one monitor (see module doc).

    Given the monitor's `lock`, its `recording` (statistics, health tracker, watches), its
    `attached` tokenizer (to name watch hits) and its `live` delivery (whose thread hands out
    the hits). Owns the drift reference and whether that delivery task is running.
    """

    def __init__(self, lock: threading.RLock, recording: Recording, attached: Attachments,
                 live: LiveDelivery) -> None:
        self._lock = lock
        self._recording = recording
        self._attached = attached
        self._live = live
        # None, a Reference, or a live monitor (read again at each get_drift).
        self._reference: Any = None
        self._watch_task = False  # the delivery thread already hands out watch hits

    @property
    def reference(self) -> Any:
        """The drift reference: None, a `Reference`, or the live monitor given."""
        with self._lock:
            return self._reference

    # ---- health -----------------------------------------------------------------------------

    def get_health(self) -> HealthResponse:
        """L0, dead and ultra-rare features, and reconstruction quality on sampled forwards
        (`health_every`; definitions in `monitor.health` and the README)."""
        return self.start_reading(with_drift=False).health()

    def start_reading(self, firing: torch.Tensor | None = None,
                      with_drift: bool = True) -> OversightReading:
        """Start copying what the health strip, the drift view and the watch marks need (call
        it under the lock, or not: it takes it); the result waits for the copies without the
        lock. `firing`: the firing summary a snapshot being built already holds (computed here
        when None)."""
        with self._lock:
            rec = self._recording
            firing = rec.firing_summary() if firing is None else firing
            sums = rec.health.seen()  # this rank's and the other ranks' at the last sync
            wait = start_copy([HealthTracker.summary_parts(firing, rec.seen_active_tokens(),
                                                           sums), sums.l0_counts])
            watched = sorted({f for w in rec.watches for f in w.features})
            hits = sum(w.delivered for w in rec.watches)
            reference = self._reference if with_drift else None
            return OversightReading(wait, sums, rec.config, rec.d_sae, watched, hits,
                                    reference, self.reference_counts, rec.backend)

    # ---- drift ------------------------------------------------------------------------------

    def reference_counts(self) -> tuple[torch.Tensor, float]:
        """Per-feature active counts (float64, on the host) and the tokens they are out of:
        what another monitor compares itself with (`set_reference(this_monitor)`)."""
        with self._lock:
            rec = self._recording
            active = rec.stats.active_count.to("cpu", torch.float64)  # with the other ranks'
            return active, float(rec.seen_active_tokens())

    def set_reference(self, source: Any) -> str | None:
        """Compare the traffic with `source` from now on: a saved monitor's folder, another
        live `FeatureMonitor` (read again at each `get_drift`), or a SAELens
        `sparsity.safetensors` (a file or a folder holding one); `None` removes it. Returns
        what the reference is. A bad source raises and changes nothing."""
        if source is None:
            reference, described = None, None
        else:
            checked = reference_from(source, self._recording.d_sae)
            live = hasattr(source, "reference_counts")
            reference, described = (source if live else checked), checked.source
        with self._lock:
            self._reference = reference
        return described

    def get_drift(self, k: int = 10, direction: str = "hot") -> DriftResponse:
        """The `k` features whose firing moved most against the reference: "hot" (more
        often than there) or "cold" (less), by z; with a divergence over all features."""
        d_sae = self._recording.d_sae
        check_int("k", k, 1, d_sae)
        with self._lock:
            reference = self._reference
        if reference is None:
            raise ValueError("no reference: call set_reference(...) first")
        if not isinstance(reference, Reference):
            reference = reference_from(reference, d_sae)  # a live monitor: read it now
        active, tokens = self.reference_counts()
        return drift_response(active, tokens, reference, k, direction,
                              self._recording.backend)

    # ---- watches ----------------------------------------------------------------------------

    def watch(self, features: Iterable[int] | int, above: float | Iterable[float] | None = None,
              callback: WatchCallback | None = None) -> Watch:
        """Watch `features`: every token where one is above `above` (one threshold, or one per
        feature; default the monitor's threshold) is a hit, passed to `callback(hit)` from the
        watch's own thread within `throttle_ms` (or kept in `watch.recent` without a callback).
        The hot path only writes the hit on the device. `cancel()` the result to stop."""
        rec = self._recording
        listed = [features] if isinstance(features, int) else list(features)
        checked = feature_list("features", MAX_WATCHED_FEATURES)(listed, rec.d_sae)
        if not checked:
            raise ValueError("watch needs at least one feature, got []")
        thresholds = _thresholds(above, len(checked), rec.config.threshold)
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        with self._lock:
            self._live.check_open()  # a closed monitor registers nothing
            if len(rec.watch_set.watches) >= MAX_WATCHES:
                raise ValueError(f"a monitor holds at most {MAX_WATCHES} active watches (each "
                                 f"may name up to {MAX_WATCHED_FEATURES} features); cancel one "
                                 f"first")
            watch = Watch(checked, thresholds, callback, rec.device, self._unwatch,
                          recent=RECENT_HITS, gate=self._live.gate, clock=self._live.clock)
            if not self._watch_task:
                self._live.add_task(self.deliver_watch_hits)  # raises if closed meanwhile
                self._watch_task = True
            rec.watch_set.add(watch)
        return watch

    def stopping_criteria(self, watch: Watch) -> Any:
        """An HF `StoppingCriteria` (in a list, for `generate(stopping_criteria=...)`) that
        ends generation for the rows where `watch` fired during that generation."""
        if not isinstance(watch, Watch):
            raise TypeError(f"stopping_criteria needs a Watch, got {type(watch).__name__}")
        with self._lock:
            return stopping_criteria(watch)

    def watch_hits(self) -> int:
        """Hits delivered so far by the active watches."""
        with self._lock:
            return sum(w.delivered for w in self._recording.watches)

    def deliver_watch_hits(self) -> None:
        """The delivery thread's task: hand every watch its new hits, oldest first."""
        with self._lock:
            rec = self._recording
            if rec.device.type == "meta":
                return  # no values to hand out
            retired = set(map(id, rec.retired_watches))
            watches = [*rec.watches, *rec.retired_watches]
            rec.retired_watches.clear()
            taken = [(w, *w.take()) for w in watches]
            token_text = self._attached.text_of()
        for watch, rows, names, lost in taken:  # queued for each watch's worker: no waiting
            watch.deliver(hits_from(rows, names, token_text), lost, last=id(watch) in retired)

    def _unwatch(self, watch: Watch) -> None:
        with self._lock:
            rec = self._recording
            if watch in rec.watch_set.watches:
                rec.watch_set.remove(watch)
                rec.retired_watches.append(watch)  # its last hits are still delivered
        self._live.poke()


class OversightReading:
    """Health, drift and watch figures whose device copies `Oversight.start_reading` started;
    `health()` and `snapshot_part()` wait for them (once), without the monitor's lock."""

    def __init__(self, wait: Callable[[], list[torch.Tensor]], health: HealthSums,
                 config: MonitorConfig, d_sae: int, watched: list[int], hits: int,
                 reference: Any, reference_counts: Callable[[], tuple[torch.Tensor, float]],
                 backend: Backend | None = None) -> None:
        self._wait = wait
        self._sums = health
        self._config = config
        self._d_sae = d_sae
        self._watched = watched
        self._hits = hits
        self._reference = reference
        self._reference_counts = reference_counts
        self._backend = backend
        self._report: HealthResponse | None = None

    def health(self) -> HealthResponse:
        """The full health report (waits for the copies the first time)."""
        if self._report is None:
            summary, l0 = self._wait()
            cfg = self._config
            self._report = HealthTracker.report_from(summary.tolist(), l0.tolist(),
                                                     self._sums, self._d_sae, cfg.rare_floor,
                                                     cfg.health_every)
        return self._report

    def snapshot_part(self) -> dict[str, Any]:
        """The snapshot's `oversight` part: the health strip, the drift view (None without a
        reference) and the watched features with their hits."""
        drift = None
        if self._reference is not None:
            ref = self._reference if isinstance(self._reference, Reference) else \
                reference_from(self._reference, self._d_sae)
            drift = drift_summary(*self._reference_counts(), ref, DRIFT_ROWS, self._backend)
        return {"health": _health_fields(self.health()), "drift": drift,
                "watched": self._watched[:MAX_SNAPSHOT_WATCHED], "watch_hits": self._hits}


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
