"""The recording's own totals as a part of the recorded state (`RecordingTotals`), and what
the other ranks had recorded at the last sync (`RemoteView`)."""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import torch

from ...checks import cut, is_int
from .registry import MAX_COUNT, SUM, Event, StatePart, check_count, check_range

Tensor = torch.Tensor


class RemoteView(NamedTuple):
    """What the other ranks of a torch.distributed job had recorded at the last
    `FeatureMonitor.sync` (their statistics are `RunningStats.remote`)."""

    tokens: int
    dropped_indices: int
    forward_passes: int
    ranks: int  # processes whose records are in view, this one included
    synced_at: float
    # Their tokens since the threshold was set (what their active counts are out of).
    active_tokens: int


class RecordingTotals(StatePart):
    """The recording's own totals as a part of the recorded state: tokens, tokens since the
    threshold was set, forward passes, the times they count from, and the other ranks' totals
    at the last sync (`RemoteView`). A sync sums tokens, active tokens, dropped indices (the
    statistics keep them) and forward passes."""

    name = "totals"
    # "ranks": each rank sends 1, so the sum over the others counts them.
    sync_rules = dict.fromkeys(("tokens", "active_tokens", "dropped_indices", "forward_passes",
                                "ranks"), SUM)

    def __init__(self, recording: Any) -> None:  # a `recording.Recording` (imports it)
        self.recording = recording

    def state_tensors(self) -> dict[str, Tensor]:
        """The token counts (int64 scalars)."""
        return {"tokens": self.recording.tokens, "active_tokens": self.recording.active_tokens}

    def state_meta(self) -> dict[str, Any]:
        """Forward passes, the times, and the remote view."""
        r = self.recording
        return {"forward_passes": r.forward_passes, "since": r.since,
                "active_since": r.active_since,
                "remote": r.remote._asdict() if r.remote is not None else None}

    def check_meta(self, meta: dict[str, Any]) -> None:
        """The four entries of `state_meta`, of their types."""
        if set(meta) != {"forward_passes", "since", "active_since", "remote"} or not (
                is_int(meta["forward_passes"]) and 0 <= meta["forward_passes"] <= MAX_COUNT
                and all(_is_time(meta[k]) for k in ("since", "active_since"))):
            raise ValueError(f"forward_passes, since or active_since missing or out of range "
                             f"(counts in 0..{MAX_COUNT}, finite times; "
                             f"{cut(repr(meta), 120)})")
        remote, fields = meta["remote"], RemoteView._fields
        if remote is not None and not (isinstance(remote, dict) and set(remote) == set(fields)
                                       and _is_time(remote["synced_at"])):
            raise ValueError(f"the save's 'remote' entry is malformed "
                             f"({cut(repr(remote), 80)}): the save is corrupt")
        for field in () if remote is None else fields:
            if field != "synced_at":
                check_count(f"the save's 'remote' entry {field}", remote[field])

    def check_values(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Token counts in 0..`MAX_COUNT`, active tokens at most the tokens."""
        check_range(self.name, tensors, "tokens", 0, MAX_COUNT)
        check_range(self.name, tensors, "active_tokens", 0, int(tensors["tokens"]))

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Restore a checked save."""
        super().load_state(tensors, meta)
        r, remote = self.recording, meta["remote"]
        r.forward_passes = meta["forward_passes"]
        r.since, r.active_since = float(meta["since"]), float(meta["active_since"])
        r.remote = RemoteView(**remote) if remote is not None else None

    def reset_on(self, event: Event) -> None:
        """A statistics reset zeroes every total, a threshold change the active tokens (the
        other ranks' too: their active counts are zeroed with ours)."""
        r = self.recording
        if event is Event.STATISTICS:
            r.tokens.zero_()
            r.forward_passes = 0
            r.remote = None
            r.since = time.time()
        if event in (Event.STATISTICS, Event.THRESHOLD):
            r.active_tokens.zero_()
            if r.remote is not None:
                r.remote = r.remote._replace(active_tokens=0)
            r.active_since = time.time() if event is Event.THRESHOLD else r.since

    def sync_state(self) -> dict[str, Tensor]:
        """This rank's totals, as int64 scalars on the recording's device."""
        r = self.recording

        def scalar(n: int) -> Tensor:
            return torch.tensor(n, dtype=torch.int64, device=r.device)

        return {"tokens": r.tokens, "active_tokens": r.active_tokens,
                "dropped_indices": r.stats.dropped_indices,
                "forward_passes": scalar(r.forward_passes), "ranks": scalar(1)}

    def take_remote(self, merged: dict[str, Tensor] | None) -> None:
        """The others' totals become the remote view."""
        self.recording.remote = None if merged is None else RemoteView(
            tokens=int(merged["tokens"]), dropped_indices=int(merged["dropped_indices"]),
            forward_passes=int(merged["forward_passes"]), ranks=int(merged["ranks"]) + 1,
            synced_at=time.time(), active_tokens=int(merged["active_tokens"]))

    def memory_bytes(self) -> dict[str, int]:
        """Not counted (a few scalars)."""
        return {}


def _is_time(value: Any) -> bool:
    """A finite number (a NaN time would load, then fail every export)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)
