"""`MonitorState`: the configuration, attachment, totals and errors of a monitor, in one value."""

from __future__ import annotations

from ..live.delivery import LiveDelivery
from ..sae.adapter import sae_id
from ..types import MonitorState
from .attachments import Attachments
from .record.recording import Recording


def monitor_state(recording: Recording, attached: Attachments, delivery: LiveDelivery,
                  total_tokens: int, history_count: int, dropped_indices: int,
                  records_dropped: int = 0, watch_hits: int = 0) -> MonitorState:
    """The state, given the totals that live on the device (read by the caller)."""
    cfg = recording.config
    memory = recording.device_bytes()
    return MonitorState(
        enabled=cfg.enabled, sae_attached=attached.sae is not None,
        hook_attached=bool(attached.hooks), hook_point=attached.hook_point,
        sae_id=sae_id(attached.sae), d_sae=recording.d_sae,
        monitored_features=list(cfg.features) if cfg.features is not None else None,
        selected_features=list(cfg.selected), history_size=cfg.history_size,
        history_count=history_count, top_k=cfg.top_k, threshold=cfg.threshold,
        throttle_ms=cfg.throttle_ms, total_tokens=total_tokens,
        forward_passes=recording.total_forward_passes, since=recording.since,
        active_since=recording.active_since, device=str(recording.device),
        errors=attached.errors, last_error=attached.last_error, dropped_indices=dropped_indices,
        examples_per_feature=cfg.examples_per_feature, context_window=cfg.context_window,
        examples_bytes=recording.examples.nbytes, labels=len(attached.labels),
        delivery_errors=delivery.errors, last_delivery_error=delivery.last_error,
        synced_ranks=recording.remote.ranks if recording.remote else 1,
        synced_at=recording.remote.synced_at if recording.remote else None,
        records_dropped=records_dropped, monitor_ms=recording.costs.mean_ms(),
        device_bytes=sum(memory.values()), memory_bytes=memory, watch_hits=watch_hits,
        health_every=cfg.health_every,
    )
