"""Watch-lists: tell me (or stop generating) when a feature I care about fires.

Each `Watch` keeps, on the device, a ring of its hits — (feature, value, request, row,
position, token) for every real token where a watched feature is above the watch's threshold —
written by the monitor's `WatchSet` in one batched pass for all watches (a cumulative sum and a
scatter), so the hot path never reads a count back. Its
`rows_fired` flags say which rows of the latest forward batch have had a hit since they were
cleared (what `stopping_criteria` hands HF `generate`). The delivery thread reads new hits once
per throttle interval and hands them, oldest first, to the watch's own worker thread
(`live.worker`), which calls the callback with each: a slow or blocking callback delays only its
own watch, never the snapshots or other watches. Every hit is handed over once, none skipped
unless more than `capacity` arrive between two reads, or more than `capacity` wait for a slow
callback (both counted in `dropped`, never hidden).
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from ...live.clock import Clock
from ...live.gate import CallbackGate
from ...live.worker import CallbackWorker
from ...types import WatchHit
from ..record.requests import WriteNames

Tensor = torch.Tensor

# Hits kept between two reads by the delivery thread.
WATCH_CAPACITY = 4096
WatchCallback = Callable[[WatchHit], None]


class Watch:
    """A handle on watched features (see module doc); `cancel()` stops it. Made by
    `FeatureMonitor.watch`."""

    def __init__(self, features: tuple[int, ...], above: tuple[float, ...],
                 callback: WatchCallback | None, device: torch.device,
                 cancel: Callable[[Watch], None], capacity: int = WATCH_CAPACITY,
                 recent: int = 1000, gate: CallbackGate | None = None,
                 clock: Clock | None = None) -> None:
        self.features = features
        self.above = above
        self.callback = callback
        self.capacity = capacity
        self._allocate(torch.device(device))
        self._names = WriteNames(capacity + 1024)  # a ring's worth of writes (until joined)
        self._read = 0  # hits handed out (host side; the delivery thread's cursor)
        self._lost = 0  # hits lost to overflow between two reads
        self._kept = 0  # hits put in `recent`
        # Without a callback the latest hits wait here (oldest dropped first).
        self.recent: deque[WatchHit] = deque(maxlen=recent)
        # With one, its own thread calls it (bounded queue; holds no reference to this watch,
        # which stops it when collected).
        self._worker: CallbackWorker | None = None
        if callback is not None:
            self._worker = CallbackWorker(
                callback, gate if gate is not None else CallbackGate(), capacity,
                "featmon_widget: a watch callback raised; its other hits and other watches are "
                "still delivered, failures are counted in watch.errors", clock)
            weakref.finalize(self, self._worker.stop, 0.0)
        self.active = True
        self._cancel = cancel

    # The ring's fields: (name, dtype).
    RING_FIELDS = (("feature", torch.int64), ("value", torch.float32),
                   ("request", torch.int64), ("row", torch.int64),
                   ("position", torch.int64), ("token", torch.int64))

    def _allocate(self, device: torch.device) -> None:
        """Empty, standalone buffers on `device` (a `WatchSet` joins them to its own)."""
        self.device = dev = device
        for name, dtype in self.RING_FIELDS:
            setattr(self, name, torch.zeros(self.capacity, dtype=dtype, device=dev))
        self.token.fill_(-1)
        self.written = torch.zeros((), dtype=torch.int64, device=dev)
        self._own_fired = torch.zeros(0, dtype=torch.bool, device=dev)
        self._set: Any = None  # the WatchSet recording it, while active

    def move_to(self, device: torch.device) -> None:
        """Follow the monitor to `device` (before anything was recorded)."""
        if torch.device(device) != self.device:
            self._allocate(torch.device(device))

    def join(self, watch_set: Any, rings: dict[str, Tensor], written: Tensor) -> None:
        """Record through `watch_set` (the batched pass of every watch): `rings` and `written`
        are views of its joint tensors, holding what this watch held."""
        self._set = watch_set
        self._names = watch_set.names
        for name, ring in rings.items():
            setattr(self, name, ring)
        self.written = written

    def detach(self, fired: Tensor | None) -> None:
        """Leave the set (cancelled): keep a copy of the ring, its count and its row flags."""
        for name, _ in self.RING_FIELDS:
            setattr(self, name, getattr(self, name).clone())
        self.written = self.written.clone()
        self._own_fired = fired.clone() if fired is not None else self._own_fired[:0]
        self._set = None

    @property
    def rows_fired(self) -> Tensor:
        """Which rows of the latest forward batch had a hit since they were cleared (bool, on
        the device; empty before a forward)."""
        return self._set.rows_fired(self) if self._set is not None else self._own_fired

    # ---- reading (the monitor's lock held while copying) ------------------------------------

    def take(self) -> tuple[list[list[Any]], dict[int, str], int]:
        """The hits written since the last `take`, as host rows [feature, value, request
        code, row, position, token], oldest first; the request names; and how many were lost
        to overflow since then."""
        written = int(self.written)
        lost = max(0, written - self._read - self.capacity)
        start = self._read + lost
        if written == start:
            self._read = written
            return [], {}, lost
        order = torch.arange(start, written, device=self.device) % self.capacity
        cols = [c.index_select(0, order) for c in (self.feature, self.value, self.request,
                                                    self.row, self.position, self.token)]
        rows = [list(r) for r in zip(*(c.cpu().tolist() for c in cols), strict=True)]
        self._read = written
        return rows, self._names.snapshot(), lost

    def deliver(self, hits: list[WatchHit], lost: int, last: bool = False) -> None:
        """Hand `hits` (oldest first) to the callback's worker, or keep them in `recent` (the
        delivery thread calls this; it never waits for the callback). `last`: the watch was
        cancelled and these are its final hits."""
        self._lost += lost
        if self._worker is None:
            self._kept += len(hits)
            self.recent.extend(hits)
            return
        self._worker.put(hits)
        if last:
            self._worker.finish()

    @property
    def dropped(self) -> int:
        """Hits lost: more than `capacity` between two reads, or waiting for a slow
        callback."""
        return self._lost + (self._worker.overflow if self._worker is not None else 0)

    @property
    def delivered(self) -> int:
        """Hits handed to the callback (or kept in `recent`)."""
        return self._kept + (self._worker.called if self._worker is not None else 0)

    @property
    def errors(self) -> int:
        """Calls of the callback that raised: each hit is handed over on its own, so one that
        fails loses nothing else, for this watch or any other."""
        return self._worker.errors if self._worker is not None else 0

    @property
    def last_error(self) -> str | None:
        """The latest error of the callback (`Type: message`), or None."""
        return self._worker.last_error if self._worker is not None else None

    @property
    def nbytes(self) -> int:
        """Device bytes held."""
        held = (self.feature, self.value, self.request, self.row, self.position, self.token)
        return sum(t.numel() * t.element_size() for t in held)

    @property
    def hits(self) -> int:
        """Hits so far (reads one count from the device)."""
        return int(self.written)

    def clear_rows(self) -> None:
        """Forget which rows have fired (a new generation starts)."""
        if self._set is not None:
            self._set.clear_rows(self)
        else:
            self._own_fired = self._own_fired[:0]

    def cancel(self) -> None:
        """Stop watching (hits already recorded are still delivered)."""
        self.active = False
        self._cancel(self)

    def __repr__(self) -> str:
        state = "active" if self.active else "cancelled"
        return f"Watch(features={list(self.features)}, above={list(self.above)}, {state})"


def hits_from(rows: list[list[Any]], names: dict[int, str],
              token_text: Callable[[int], str | None]) -> list[WatchHit]:
    """`WatchHit`s from host rows of `Watch.take`."""
    return [WatchHit(feature=int(f), value=float(v), request_id=names.get(int(c), "?"),
                     row=int(r), position=int(p), token_id=int(t) if t >= 0 else None,
                     token=token_text(int(t)) if t >= 0 else None)
            for f, v, c, r, p, t in rows]


def stopping_criteria(watch: Watch) -> Any:
    """An HF `StoppingCriteria` that ends generation for the rows where `watch` fired (its
    flags are cleared now, so only this generation's hits count). It returns the watch's
    device flags: no host read beyond the one `generate` already makes per step."""
    import transformers

    class WatchStops(transformers.StoppingCriteria):
        def __call__(self, input_ids: Tensor, scores: Any, **kwargs: Any) -> Tensor:
            fired = watch.rows_fired
            if fired.shape[0] != input_ids.shape[0]:
                return torch.zeros(input_ids.shape[0], dtype=torch.bool,
                                   device=input_ids.device)
            return fired.to(input_ids.device)

    watch.clear_rows()
    return transformers.StoppingCriteriaList([WatchStops()])
