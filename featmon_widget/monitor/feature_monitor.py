"""FeatureMonitor, the facade: it owns the lock, the recording, the live delivery and the
components it hands each operation to (`Intake`, `Queries`, `Oversight`, `Sharing`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import types
from ..hooks import MonitorHook
from ..live.delivery import EventCallback, LiveDelivery, SnapshotCallback
from ..live.subscriptions import Subscription
from ..sae.adapter import sae_device, sae_width
from ..snapshot.schemas import Snapshot
from .attachments import Attachments
from .delegated import Delegated
from .io.component import Sharing
from .oversight.component import Oversight
from .oversight.watch import Watch, WatchCallback
from .query.component import Queries
from .query.probe import Probe
from .record.component import Intake, initial_config
from .record.ingest import Ingest
from .record.recording import Recording
from .record.requests import RequestContext
from .stats.fused import FusedEncoder
from .stats.kernels import StatisticsKernels


class FeatureMonitor:
    """Records which SAE features fire and keeps exact per-feature statistics on the device.
    Feed it `on_activation(acts)` or `attach` it to a model; the hot path never reads back to the
    host (queries and snapshots copy)."""

    def __init__(self, d_sae: int, *, device: torch.device | str | None = None,
                 features: list[int] | None = None, history_size: int = 100,
                 top_k: int | None = None, threshold: float = 0.0, throttle_ms: float = 100.0,
                 enabled: bool = True, selected: list[int] | tuple[int, ...] = (),
                 examples_per_feature: int = 8, context_window: int = 8, health_every: int = 8,
                 samples_per_feature: int = 2, sample_seed: int = 0, rare_floor: float = 1e-5,
                 distributions: bool = True, compile: bool | None = None,
                 native: bool | None = None) -> None:
        config = initial_config(
            d_sae, top_k, features=features, history_size=history_size, threshold=threshold,
            throttle_ms=throttle_ms, enabled=enabled, selected=selected, health_every=health_every,
            examples_per_feature=examples_per_feature, context_window=context_window,
            samples_per_feature=samples_per_feature, sample_seed=sample_seed,
            rare_floor=rare_floor, distributions=distributions)
        self.d_sae, self._lock = d_sae, threading.RLock()
        self._attached = Attachments(self._lock)
        self._recording = Recording(d_sae, config, device, StatisticsKernels(compile, native))
        self._ingest = Ingest(self._recording, FusedEncoder(self._recording.compiled))
        self._requests = RequestContext(f"featmon_request_{id(self)}")
        self._live = LiveDelivery(lambda options: self._queries.build_snapshot(options),
                                  lambda: self.state, config.throttle_ms / 1000)
        shared = (self._lock, self._recording)
        self._oversight = Oversight(*shared, self._attached, self._live)
        self._queries = Queries(*shared, self._attached, self._live, self._oversight)
        self._intake = Intake(*shared, self._ingest, self._requests, self._live)
        self._sharing = Sharing(*shared, self._attached, self._requests, self._live)
        self._probe = Probe(*shared, self._attached, self._intake)

    @classmethod
    def for_sae(cls, sae: Any, **config: Any) -> FeatureMonitor:
        """A monitor as wide as `sae`, on its device unless `device` is given."""
        config.setdefault("device", sae_device(sae))  # None: follow the activations
        monitor = cls(sae_width(sae), **config)
        monitor.sae = sae
        return monitor

    device = Delegated("_recording", read_only=True)
    """Where the statistics and the history live (a `torch.device`)."""
    config = Delegated("_recording", read_only=True)
    """The current configuration (an immutable `MonitorConfig`)."""

    def request(self, request_id: str) -> AbstractContextManager[str]:
        """Tag every forward pass inside the block with `request_id`; positions continue."""
        return self._intake.request(request_id)

    def current_request(self) -> str:
        """The active request id, or a fresh automatic one (`auto-N`) for one forward pass."""
        return self._intake.current_request()

    def on_activation(self, acts: Tensor, request_id: str | None = None,
                      positions: Tensor | None = None, mask: Tensor | None = None,
                      token_ids: Tensor | None = None) -> None:
        """Record one forward pass's features `acts` [..., d_sae] ([batch, tokens], or one
        sequence's tokens); optional `mask` (nonzero = real token; its last columns are this
        pass's), `positions`, `token_ids` [batch, tokens]. Bad input raises, records nothing."""
        self._intake.on_activation(acts, request_id, positions, mask, token_ids)

    def on_sparse_activation(self, indices: Tensor, values: Tensor, request_id: str | None = None,
                             positions: Tensor | None = None, mask: Tensor | None = None,
                             token_ids: Tensor | None = None) -> None:
        """Record a TopK SAE's output `indices`, `values` [..., k] (other features 0; indices
        distinct per token): `on_activation`'s statistics in O(k), not O(d_sae), per token."""
        self._intake.on_sparse_activation(indices, values, request_id, positions, mask, token_ids)

    def encode_and_record(self, sae: Any, x: Tensor, request_id: str, mask: Tensor | None = None,
                          position_ids: Tensor | None = None,
                          token_ids: Tensor | None = None) -> None:
        """Encode a layer output `x` [..., d_in] with `sae` and record it (used by hooks); the
        model's `position_ids` skip a re-fed prefix, `token_ids` that do not fit `x` are ignored."""
        self._intake.encode_and_record(sae, x, request_id, mask, position_ids, token_ids)

    def attach(self, model: Any, hook_point: str, sae: Any = None,
               tokenizer: Any = None) -> MonitorHook:
        """Hook `sae` onto `model`'s submodule `hook_point` (a torch or nnsight model); returns a
        removable handle. `tokenizer` (default `model.tokenizer`) names the recorded tokens."""
        return self._attached.attach(self, self.d_sae, model, hook_point, sae, tokenizer)

    tokenizer = Delegated("_attached")
    """The tokenizer that names recorded tokens (anything with `decode(ids)`), or None."""
    sae = Delegated("_attached")
    """The SAE last attached (or given to `for_sae`)."""

    def hook_removed(self, hook: MonitorHook) -> None:
        """Forget a hook that detached itself (called by `MonitorHook.remove`)."""
        self._attached.removed(hook)

    def report_hook_error(self, hook: Any, exc: BaseException) -> None:
        """Count a monitoring failure inside a hook; the hook then stops monitoring."""
        self._attached.failed(hook, exc)
        self._live.emit("error")

    @property
    def state(self) -> types.MonitorState:
        """Configuration, attachment, totals and errors."""
        return self._queries.state()

    def configure(self, **changes: Any) -> types.MonitorState:
        """Change only the given settings (invalid values raise, change nothing); a smaller
        history keeps the newest records, a new threshold restarts active_count, mean_active."""
        self._intake.configure(**changes)
        return self.state

    def enable(self, flag: bool = True) -> types.MonitorState:
        """Turn recording on or off; statistics and history are kept."""
        return self.configure(enabled=flag)

    def get_history(self, limit: int = 50, request_id: str | None = None,
                    row: int | None = None) -> types.HistoryResponse:
        """Recorded tokens, newest first; `request_id` keeps one request, `row` (or
        `request_id="name/N"`) one batch row of it."""
        return self._queries.get_history(limit, request_id, row)

    def clear_history(self) -> int:
        """Empty the history; returns how many records were cleared."""
        return self._intake.clear_history()

    def get_statistics(self, features: list[int] | None = None) -> types.StatisticsResponse:
        """Statistics of `features` (default: the monitored features, or all)."""
        return self._queries.get_statistics(features)

    def reset_statistics(self) -> int:
        """Zero every statistic and total; returns the number of monitored features reset."""
        return self._intake.reset_statistics()

    def get_top_features(self, k: int = 10, metric: str = "mean") -> types.TopFeaturesResponse:
        """The k monitored features ranked on the device by `metric` (mean, mean_active, max,
        min, active_ratio, count, active_count, std); ties to the lower index, undefined last."""
        return self._queries.get_top_features(k, metric)

    def get_examples(self, feature: int, k: int | None = None,
                     kind: str = "top") -> types.ExamplesResponse:
        """`feature`'s examples since the reset, in context: kind "top" (one per pass row, best
        first) or "sample" (a uniform random sample of its activating tokens)."""
        return self._queries.get_examples(feature, k, kind)

    def get_cofiring(self, feature: int, k: int = 10) -> types.CoFiringResponse:
        """What a selected feature fires with, ranked by Jaccard (see `CoFiringResponse`)."""
        return self._queries.get_cofiring(feature, k)

    def get_logits(self, feature: int, k: int = 10) -> types.LogitsResponse:
        """What `feature`'s decoder direction promotes / suppresses: `W_dec[feature] @ W_U`, no
        final layer norm (see `LogitsResponse`); computed once, cached, never on the hot path."""
        return self._queries.get_logits(feature, k)

    def set_unembedding(self, W_U: Tensor | None) -> None:  # noqa: N803 (the usual name)
        """Use `W_U` [d_model, vocab] for `get_logits` instead of the attached model's (None:
        the model's again); a bad matrix raises ValueError and changes nothing."""
        self._queries.set_unembedding(W_U)

    def get_distribution(self, feature: int) -> types.DistributionResponse:
        """`feature`'s activation histogram and quantiles since the last reset."""
        return self._queries.get_distribution(feature)

    def probe(self, texts: str | list[str], record: bool = False,
              features: list[int] | None = None, k: int = 5) -> types.ProbeResponse:
        """The features on each token of `texts` (see `query.probe`); recorded only if `record`."""
        return self._probe.probe(texts, record, features, k)

    def set_labels(self, source: Any) -> int:
        """Name features from a dict `{feature: text}` or a JSON / JSON Lines / CSV file (e.g.
        Neuronpedia's); replaces all labels ({} clears), returns how many have one. A bad entry
        raises and changes nothing."""
        return self._queries.set_labels(source)

    def get_health(self) -> types.HealthResponse:
        """L0, dead and ultra-rare features, reconstruction quality every `health_every` pass."""
        return self._oversight.get_health()

    def reference_counts(self) -> tuple[Tensor, float]:
        """Active counts (float64, host) and their token total, for `set_reference(monitor)`."""
        return self._oversight.reference_counts()

    def set_reference(self, source: Any) -> str | None:
        """Compare the traffic with `source`: a saved monitor's folder, a live `FeatureMonitor`
        (read at each `get_drift`) or a SAELens `sparsity.safetensors`; `None` removes it. Returns
        what the reference is; a bad source raises and changes nothing."""
        return self._oversight.set_reference(source)

    def get_drift(self, k: int = 10, direction: str = "hot") -> types.DriftResponse:
        """The `k` features whose firing moved most against the reference: "hot" (more
        often than there) or "cold" (less), by z; with a divergence over all features."""
        return self._oversight.get_drift(k, direction)

    def watch(self, features: Iterable[int] | int, above: float | Iterable[float] | None = None,
              callback: WatchCallback | None = None) -> Watch:
        """Every token where one of `features` is above `above` (one value or one per feature;
        default the threshold) is a hit for `callback(hit)` on the delivery thread within
        throttle_ms (else kept in `watch.recent`). `cancel()` the result to stop."""
        return self._oversight.watch(features, above, callback)

    def stopping_criteria(self, watch: Watch) -> Any:
        """An HF `StoppingCriteria` list for `generate`: it stops the rows where `watch` fired."""
        return self._oversight.stopping_criteria(watch)

    def watch_hits(self) -> int:
        """Hits delivered so far by the active watches."""
        return self._oversight.watch_hits()

    def save(self, path: str | Path) -> Path:
        """Save what was recorded, the configuration and labels (not the SAE, hooks or
        subscribers) into the folder `path`; `FeatureMonitor.load` gives it back bit for bit."""
        return self._sharing.save(path)

    @classmethod
    def load(cls, path: str | Path, *, device: torch.device | str | None = None,
             compile: bool | None = None, native: bool | None = None) -> FeatureMonitor:
        """The monitor `save` wrote into `path`, on `device` (default: the saved device if
        this machine has it, else the CPU). A corrupt or newer save raises ValueError."""
        saved = Sharing.read(path)
        monitor = cls(**Sharing.settings(saved, device), compile=compile, native=native)
        monitor._sharing.restore(saved)
        return monitor

    def export_sparsity(self, path: str | Path) -> Path:
        """Write log10 firing densities as SAELens' `sparsity.safetensors` (file or folder)."""
        return self._sharing.export_sparsity(path)

    def history_frame(self) -> Any:
        """The history as a pandas DataFrame, oldest first (see `exports.history_frame`)."""
        return self._sharing.history_frame()

    def export_history(self, path: str | Path) -> Path:
        """Write `history_frame()` to the Parquet file `path`."""
        return self._sharing.export_history(path)

    def to_html(self, path: str | Path, *, table_rows: int = 50, metric: str = "mean",
                records: int = 20) -> Path:
        """Write the widget's view of a snapshot now as one HTML file (no kernel, no network)."""
        return self._sharing.to_html(self.snapshot(table_rows, metric, records), path)

    def sync(self, group: Any = None) -> types.MonitorState:
        """Collective (on every rank of `group`): every rank's statistics become visible here;
        each keeps recording its own, and syncing again refreshes (never double-counts) them."""
        self._sharing.sync(group)
        return self.state

    def snapshot(self, table_rows: int = 50, metric: str = "mean", records: int = 20,
                 search: str = "") -> Snapshot:
        """A bounded summary for the frontend (see `Snapshot`); `search` limits the table to
        the feature with that index and those whose label contains it."""
        return self._queries.snapshot(table_rows, metric, records, search)

    def subscribe(self, callback: SnapshotCallback, *, table_rows: int = 50,
                  metric: str = "mean", records: int = 20, search: str = "") -> Subscription:
        """Deliver snapshots to `callback` at most every throttle_ms, and always after the last
        change of a burst (from a background thread). `cancel()` the result to stop."""
        return self._queries.subscribe(callback, table_rows, metric, records, search)

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        """The active snapshot subscriptions (a widget holds one)."""
        return self._live.subscriptions

    def on_state_change(self, callback: EventCallback) -> Callable[[], None]:
        """Call `callback(event, state)` after configure/enable/clear/reset and hook errors."""
        return self._live.listen(callback)

    def widget(self, **options: Any) -> Any:
        """This monitor's live `MonitorWidget`, made once (a re-run cell shows the same one)."""
        from ..widget import MonitorWidget  # needs the built frontend bundle: loaded on demand
        return MonitorWidget.of(self, **options)

    def serve(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
              **options: Any) -> Any:
        """Serve this monitor over REST + WebSocket from a background thread (`MonitorServer`)."""
        from ..serve.server import MonitorServer  # the web stack: imported only when serving
        return MonitorServer(self, host, port, token, **options)

    def close(self) -> None:
        """Remove hooks and stop the delivery thread."""
        self._attached.remove_hooks()
        self._live.close()

    def __repr__(self) -> str:
        return f"FeatureMonitor({self._queries.describe()})"
