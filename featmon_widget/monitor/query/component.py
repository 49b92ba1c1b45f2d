"""The read side of a monitor: its state, the history, statistics, top features and examples,
the labels that name features, and bounded snapshots for the frontend. `Queries` answers them
for `FeatureMonitor`, which owns one and delegates to it."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from typing import Any

from ...checks import check_int, cut
from ...live.delivery import LiveDelivery, SnapshotCallback
from ...live.subscriptions import Subscription
from ...snapshot.build import finish_snapshot, fit_snapshot, gather_snapshot
from ...snapshot.options import PANEL_LOGITS, SnapshotOptions, check_metric, snapshot_options
from ...snapshot.schemas import Snapshot
from ...types import (
    CoFiringResponse,
    DistributionResponse,
    ExamplesResponse,
    HistoryResponse,
    LogitsResponse,
    MonitorState,
    StatisticsResponse,
    TopFeaturesResponse,
)
from ..attachments import Attachments
from ..oversight.component import Oversight
from ..record.recording import Recording
from ..state import monitor_state
from . import queries
from .cofiring_ranking import cofiring_of
from .distribution import distribution_of
from .labels import load_labels
from .logits import Logits

# What `get_examples` can return: the top-activating examples, or the sample.
EXAMPLE_KINDS = ("top", "sample")


class Queries:
    """Reads one monitor (see module doc).

    Given the monitor's `lock` (held while reading, released before waiting for device copies),
    its `recording`, its `attached` labels and tokenizer, its `live` delivery (whose errors the
    state reports, and which hears of new labels) and its `oversight` (a snapshot's health,
    drift and watch part). Owns the snapshot sequence numbers.
    """

    def __init__(self, lock: threading.RLock, recording: Recording, attached: Attachments,
                 live: LiveDelivery, oversight: Oversight) -> None:
        self._lock = lock
        self._recording = recording
        self._attached = attached
        self._live = live
        self._oversight = oversight
        self._sequence = itertools.count(1)
        self._logits = Logits(lock, attached, recording.d_sae)

    def state(self) -> MonitorState:
        """Configuration, attachment, totals and errors."""
        with self._lock:
            totals = self._recording.device_totals()
            return monitor_state(self._recording, self._attached, self._live,
                                 *(int(t) for t in totals),
                                 watch_hits=self._oversight.watch_hits())

    def describe(self) -> str:
        """The monitor's width, device and main settings, as its repr shows them."""
        rec, cfg = self._recording, self._recording.config
        return (f"d_sae={rec.d_sae}, device={str(rec.device)!r}, enabled={cfg.enabled}, "
                f"history_size={cfg.history_size}, top_k={cfg.top_k}")

    def get_history(self, limit: int = 50, request_id: str | None = None,
                    row: int | None = None) -> HistoryResponse:
        """Recorded tokens, newest first; `request_id` keeps one request, `row` (or
        `request_id="name/N"`) one batch row of it."""
        check_int("limit", limit, *queries.HISTORY_LIMIT_RANGE)
        if row is not None:
            check_int("row", row, 0, 2**62)
            if request_id is None:
                raise ValueError(f"row={row} needs a request_id (rows are per request)")
        with self._lock:
            history = self._recording.history
            rows, monitored = history.read(), history.monitored
            threshold, token_text = self._recording.config.threshold, self._attached.text_of()
        found = queries.matching(rows, request_id, row)
        records = queries.records_at(rows, found[:limit], monitored, threshold, token_text)
        return HistoryResponse(records=records, total=len(found))

    def get_statistics(self, features: list[int] | None = None) -> StatisticsResponse:
        """Statistics of `features` (default: the monitored features, or all)."""
        with self._lock:
            rec, labels = self._recording, self._attached.labels
            index = rec.feature_index(features)
            top = queries.top_token_rows(rec.examples, index, labels, self._attached.text_of())
            rows = queries.statistics_rows(rec.stats, index, labels, top)
            total, since = int(rec.device_totals().tokens), rec.since
        return StatisticsResponse(features=rows, total_activations=total, since=since)

    def get_top_features(self, k: int = 10, metric: str = "mean") -> TopFeaturesResponse:
        """The k monitored features ranked by `metric`, computed on the device.

        Metrics: mean, mean_active, max, min, active_ratio, count, active_count, std. Ties go to
        the lower index; features where the metric is undefined come last.
        """
        check_int("k", k, *queries.TOP_FEATURES_K_RANGE)
        check_metric(metric)
        with self._lock:
            rec, labels = self._recording, self._attached.labels
            index = rec.ranked(metric, k)
            top = queries.top_token_rows(rec.examples, index, labels, self._attached.text_of())
            rows = queries.statistics_rows(rec.stats, index, labels, top)
        return TopFeaturesResponse(metric=metric, features=rows)

    def get_examples(self, feature: int, k: int | None = None,
                     kind: str = "top") -> ExamplesResponse:
        """`feature`'s examples since the last reset, with the tokens around each: kind "top",
        its top-activating ones (at most one per sequence row of a forward pass), highest
        first; "sample", a uniform random sample of its activating tokens (`record.samples`),
        in the order of their random keys."""
        check_int("feature", feature, 0, self._recording.d_sae - 1)
        if kind not in EXAMPLE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, EXAMPLE_KINDS))}, got "
                             f"{cut(repr(kind), 40)}")
        with self._lock:
            rec, token_text = self._recording, self._attached.text_of()
            table = rec.examples if kind == "top" else rec.samples
            k = table.per_feature if k is None else check_int("k", k, 0, table.per_feature)
            examples = queries.feature_examples(table, feature, k, token_text)
            label = self._attached.labels.get(feature)
        return ExamplesResponse(feature=feature, examples=examples, label=label, kind=kind)

    def get_cofiring(self, feature: int, k: int = 10) -> CoFiringResponse:
        """What selected `feature` fires with since it was selected: the k features of highest
        Jaccard index with it (see `CoFiringResponse`)."""
        check_int("feature", feature, 0, self._recording.d_sae - 1)
        check_int("k", k, 1, 1000)
        with self._lock:
            return cofiring_of(self._recording.cofiring, feature, k, self._attached.labels)

    def get_logits(self, feature: int, k: int = 10) -> LogitsResponse:
        """What `feature`'s decoder direction promotes and suppresses (see `query.logits`)."""
        return self._logits.get_logits(feature, k)

    def set_unembedding(self, w_u: Any) -> None:
        """The unembedding [d_model, vocab] logits use (None: the attached model's again)."""
        self._logits.set_unembedding(w_u)
        self._live.emit("unembedding")

    def get_distribution(self, feature: int) -> DistributionResponse:
        """`feature`'s activation distribution since the last reset (see
        `DistributionResponse`)."""
        check_int("feature", feature, 0, self._recording.d_sae - 1)
        with self._lock:
            return distribution_of(self._recording, feature)

    def set_labels(self, source: Any) -> int:
        """Name features: a dict `{feature: text}`, or a JSON / JSON Lines / CSV file (e.g. a
        Neuronpedia explanations export; see `labels`). Replaces all labels (`{}` clears);
        returns how many features have one. A bad entry raises and changes nothing."""
        labels = load_labels(source, self._recording.d_sae)
        with self._lock:
            self._attached.labels = labels
        self._live.emit("labels")
        return len(labels)

    def snapshot(self, table_rows: int = 50, metric: str = "mean", records: int = 20,
                 search: str = "") -> Snapshot:
        """A bounded summary for the frontend (see `Snapshot`); `search` limits the table to
        the feature with that index and those whose label contains it. The options are checked
        first."""
        return self.build_snapshot(snapshot_options(table_rows, metric, records, search))

    def subscribe(self, callback: SnapshotCallback, table_rows: int = 50, metric: str = "mean",
                  records: int = 20, search: str = "") -> Subscription:
        """Deliver snapshots with these options (checked first) to `callback`, throttled (see
        `LiveDelivery.subscribe`)."""
        return self._live.subscribe(callback,
                                    snapshot_options(table_rows, metric, records, search))

    def build_snapshot(self, options: SnapshotOptions) -> Snapshot:
        """The snapshot for checked `options` (what the delivery thread builds). The selected
        features' logit effects come from their cache (computed there once, before the lock)."""
        logits = self._logits.responses(list(self._recording.config.selected), PANEL_LOGITS)
        with self._lock:  # only enqueue device work and copies here; wait after releasing
            state = monitor_state(self._recording, self._attached, self._live,
                                  0, 0, 0)  # the device totals are read in finish_snapshot
            parts = gather_snapshot(self._recording, state, next(self._sequence), options,
                                    self._attached.text_of(), self._attached.labels, logits)
            oversight = self._oversight.start_reading(firing=parts.firing)
        return fit_snapshot(dataclasses.replace(finish_snapshot(parts),
                                                oversight=oversight.snapshot_part()))
