"""The recording side of a monitor: forward passes in (dense, sparse TopK, or encoded by an
SAE, tagged with their request), and the operations that change what is recorded (configure,
clear the history, reset the statistics). `Intake` does them for `FeatureMonitor`, which owns
one and delegates to it."""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import torch

from ...live.delivery import LiveDelivery
from ..config import MonitorConfig
from .ingest import Ingest, check_dense, check_sparse
from .recording import Recording
from .requests import RequestContext


def initial_config(d_sae: Any, top_k: int | None, **settings: Any) -> MonitorConfig:
    """A new monitor's configuration: `d_sae` checked first, `top_k` defaulting to 10 (or
    `d_sae` when narrower), every other setting validated by `MonitorConfig.replace`."""
    if not isinstance(d_sae, int) or isinstance(d_sae, bool) or d_sae < 1:
        raise ValueError(f"d_sae must be a positive int, got {d_sae!r}")
    return MonitorConfig().replace(d_sae, top_k=min(10, d_sae) if top_k is None else top_k,
                                   **settings)


class Intake:
    """Records forward passes into one monitor's `recording` and changes its configuration.

    Given the monitor's `lock` (held for every write), the `recording`, the `ingest` that
    checks and routes each pass into it, the `requests` context that tags passes, and the
    `live` delivery (poked after each pass, told of each change).
    """

    def __init__(self, lock: threading.RLock, recording: Recording, ingest: Ingest,
                 requests: RequestContext, live: LiveDelivery) -> None:
        self._lock = lock
        self._recording = recording
        self._ingest = ingest
        self._requests = requests
        self._live = live
        # Set by `muted()` in one context (thread or task): its passes are not recorded.
        self._muted: contextvars.ContextVar[bool] = contextvars.ContextVar(
            f"featmon_muted_{id(self)}", default=False)

    # ---- requests ---------------------------------------------------------------------------

    def request(self, request_id: str) -> AbstractContextManager[str]:
        """Tag every forward pass inside the block with `request_id`; positions continue."""
        return self._requests.request(request_id)

    def current_request(self) -> str:
        """The active request id, or a fresh automatic one (`auto-N`) for one forward pass."""
        return self._requests.current()

    @contextlib.contextmanager
    def muted(self) -> Iterator[None]:
        """Inside the block, nothing this context (thread or task) passes in is recorded, and
        no automatic request id is used up: a `probe` that leaves every recorded state as it
        was. Other threads record as usual."""
        token = self._muted.set(True)
        try:
            with self._requests.request("probe"):  # never `auto-N`: the counter is saved state
                yield
        finally:
            self._muted.reset(token)

    # ---- forward passes ---------------------------------------------------------------------

    def on_activation(self, acts: torch.Tensor, request_id: str | None = None,
                      positions: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                      token_ids: torch.Tensor | None = None) -> None:
        """Record one forward pass's features `acts` [..., d_sae] (nothing while recording is
        off).

        Leading dims are [batch, tokens] (one dim: tokens of one sequence). `mask` (nonzero =
        real token) may be longer than the tokens: its last columns belong to this pass.
        `positions` overrides the automatic ones; `token_ids` [batch, tokens] say which input
        tokens these are. Bad input raises and records nothing.
        """
        if not self._recording.config.enabled:
            return
        check_dense(acts, self._recording.d_sae)
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
        if not self._recording.config.enabled:
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
        if self._recording.config.enabled:
            self._record(self._ingest.encoded, sae, x, request_id, mask, position_ids,
                         token_ids)

    def _request_or_current(self, request_id: str | None) -> str:
        return self.current_request() if request_id is None else request_id

    def _record(self, ingest: Callable[..., None], *args: Any) -> None:
        if self._muted.get():
            return
        rec = self._recording
        with self._lock, torch.no_grad(), rec.positions.kept_on_error():
            costs = rec.costs
            costs.start(rec.device)
            ingest(*args)
            costs.stop()
        self._live.poke()

    # ---- changes ----------------------------------------------------------------------------

    def configure(self, **changes: Any) -> None:
        """Change only the given settings: enabled, features, history_size, top_k, threshold,
        throttle_ms, selected, examples_per_feature, context_window (and the health settings).
        Invalid values raise and change nothing; listeners hear "configured".

        Resizing the history keeps the newest records that fit. A new threshold restarts the
        threshold-dependent statistics (active_count, mean_active; see `active_since`).
        """
        with self._lock:
            new = self._recording.config.replace(self._recording.d_sae, **changes)
            self._recording.reconfigure(new)
            self._live.set_interval(new.throttle_ms / 1000)
        self._live.emit("configured")

    def clear_history(self) -> int:
        """Empty the history; returns how many records were cleared."""
        with self._lock:
            cleared = self._recording.clear_history()
        self._live.emit("history_cleared")
        return cleared

    def reset_statistics(self) -> int:
        """Zero every statistic and total; returns the number of monitored features reset."""
        with self._lock:
            self._recording.reset_statistics()
            features = self._recording.config.features
        self._live.emit("statistics_reset")
        return len(features) if features is not None else self._recording.d_sae
