"""Preallocated ring buffer of per-token records, on the device.

Memory depends on history_size, top_k and the number of monitored features only. Each forward
writes the last `history_size` of its real tokens; which rows those are is worked out on the
device (ranks from a cumulative sum, then a scatter), so no count is read back on the hot path.
"""

from __future__ import annotations

from typing import Any

import torch

from ...snapshot.records import HistoryRows, HistoryTail, history_rows
from ...snapshot.transfer import start_copy
from ..stats.rider import RowTops
from .features import DenseFeatures, SparseFeatures
from .registry import MAX_COUNT, Event, StatePart, check_range
from .requests import WriteNames, check_names_meta

Tensor = torch.Tensor

# Seconds from 1970 that a pandas timestamp holds (the years 1677..2262): a saved time beyond
# them would load, then fail `history_frame`.
_MAX_TIME = 9.2e9
# Names kept beyond history_size: a write whose rows were all padding adds a name but no record.
_SPARE_REQUEST_NAMES = 1024


class HistoryRing(StatePart):
    """Per token: its top_k (index, value) pairs, the monitored features' values, request, row,
    position and time.

    One extra slot past the end is a write sink for rows that are not kept.
    """

    name = "history"

    def __init__(self, size: int, top_k: int, monitored: tuple[int, ...], device: torch.device,
                 d_sae: int = 2**31 - 1):
        self.size = size
        self.d_sae = d_sae  # the bound of the feature indices a save may hold
        self.top_k = top_k
        self.monitored = monitored
        self.device = torch.device(device)
        slots = size + 1
        dev = self.device
        self.top_idx = torch.zeros(slots, top_k, dtype=torch.int32, device=dev)
        self.top_val = torch.zeros(slots, top_k, dtype=torch.float32, device=dev)
        self.values = torch.zeros(slots, len(monitored), dtype=torch.float32, device=dev)
        self.request = torch.zeros(slots, dtype=torch.int64, device=dev)
        self.row = torch.zeros(slots, dtype=torch.int32, device=dev)
        self.position = torch.zeros(slots, dtype=torch.int64, device=dev)
        self.timestamp = torch.zeros(slots, dtype=torch.float64, device=dev)
        self.token = torch.full((slots,), -1, dtype=torch.int64, device=dev)  # -1: unknown
        self.written = torch.zeros((), dtype=torch.int64, device=dev)
        self._monitored_index = torch.tensor(monitored, dtype=torch.int64, device=dev)
        self._names = WriteNames(size + _SPARE_REQUEST_NAMES)

    def row_tops(self, valid: Tensor) -> RowTops | None:
        """The rows a forward with real-token flags `valid` [N] will write, for the dense
        statistics pass to rank (`RowTops`); None when it writes none."""
        if min(valid.shape[0], self.size) == 0:
            return None
        placement = self._placement(valid)
        pick, filled = placement[0], placement[1]
        return RowTops(torch.where(filled, pick, -1), self.top_k, placement)

    def _placement(self, valid: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Which rows of a forward (`valid` [N]) the ring keeps, worked out on the device: the
        row of each kept slot (`pick`), whether the slot holds one (`filled`), its ring slot
        (`dest`; the sink where not filled) and the forward's real tokens (`total`)."""
        n = valid.shape[0]
        keep_n = min(n, self.size)
        dev = self.device
        valid64 = valid.to(torch.int64)
        rank = valid64.cumsum(0) - 1  # rank among valid rows
        total = rank[-1] + 1
        first_kept = (total - keep_n).clamp_min(0)
        slot = rank - first_kept
        slot = torch.where(valid & (slot >= 0), slot, keep_n)  # keep_n is a sink
        pick = torch.zeros(keep_n + 1, dtype=torch.int64, device=dev)
        pick.scatter_(0, slot, torch.arange(n, device=dev))
        pick = pick[:keep_n]
        filled = torch.arange(keep_n, device=dev) < total.clamp_max(keep_n)
        dest = torch.where(filled, (self.written + torch.arange(keep_n, device=dev)) % self.size,
                           self.size)
        return pick, filled, dest, total

    def write(self, features: DenseFeatures | SparseFeatures, valid: Tensor, rows: Tensor,
              positions: Tensor, request_id: str, timestamp: float,
              token_ids: Tensor | None = None, code: int | None = None,
              tops: RowTops | None = None) -> None:
        """Append the last `size` valid rows of `features` (with `rows`, `positions` and, when
        known, `token_ids` [N]); `code`: this write's code from `register`, if taken before;
        `tops`: from `row_tops` for this forward, ranked by the statistics pass if it could."""
        keep_n = min(features.n, self.size)
        if keep_n == 0:
            return
        if code is None:
            code = self.register(request_id)
        pick, _, dest, total = self._placement(valid) if tops is None else tops.placement
        if tops is not None and tops.ranked:
            top_idx, top_val = tops.idx, tops.val
        else:
            top_idx, top_val = features.top_of(pick, self.top_k)
        self.top_idx.index_copy_(0, dest, top_idx)
        self.top_val.index_copy_(0, dest, top_val)
        if self.monitored:
            self.values.index_copy_(0, dest, features.columns_of(pick, self._monitored_index))
        self.request.index_fill_(0, dest, code)
        self.row.index_copy_(0, dest, rows.index_select(0, pick).to(torch.int32))
        self.position.index_copy_(0, dest, positions.index_select(0, pick))
        self.timestamp.index_fill_(0, dest, timestamp)
        if token_ids is None:
            self.token.index_fill_(0, dest, -1)
        else:
            self.token.index_copy_(0, dest, token_ids.index_select(0, pick))
        self.written += total.clamp_max(keep_n)

    def register(self, request_id: str) -> int:
        """A fresh code for one write of `request_id` (a ValueError once codes run out)."""
        return self._names.register(request_id)

    # ---- StatePart: saved, emptied by a history clear, local to each rank -----------------

    def state_tensors(self) -> dict[str, Tensor]:
        """The ring's live tensors (saving copies them, loading copies into them)."""
        names = ("top_idx", "top_val", "values", "request", "row", "position", "timestamp",
                 "token", "written")
        return {name: getattr(self, name) for name in names}

    def state_meta(self) -> dict[str, Any]:
        """The request names of the records, and the next request code."""
        return self._names.state_meta()

    def check_meta(self, meta: dict[str, Any]) -> None:
        """`state_meta`'s names and next code."""
        check_names_meta(meta, "next_code")

    def check_values(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Indices of features (or -1), counts and codes not negative, times a clock can give
        (seconds within the years 1677..2262 that exports can write); the
        width is the top_idx's bound, given by the ring's owner (`d_sae`)."""
        check_range(self.name, tensors, "written", 0, MAX_COUNT)
        check_range(self.name, tensors, "top_idx", -1, self.d_sae - 1)
        check_range(self.name, tensors, "request", 0, MAX_COUNT)
        check_range(self.name, tensors, "row", 0)
        check_range(self.name, tensors, "timestamp", -_MAX_TIME, _MAX_TIME, nan=False)

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Copy a checked save in."""
        super().load_state(tensors, meta)
        self._names.load_state_meta(meta)

    def reset_on(self, event: Event) -> None:
        """A history clear empties the ring."""
        if event is Event.HISTORY:
            self.clear()

    def clear(self) -> int:
        """Empty the ring; returns how many records it held (reads one count from the device)."""
        held = self.count()
        self.written.zero_()
        self._names.clear()
        return held

    def resized(self, size: int, top_k: int, monitored: tuple[int, ...]) -> HistoryRing:
        """A new ring with the newest records of this one carried over.

        Extra top-k slots are filled with index -1; monitored features this ring did not record
        get NaN. Nothing that fits is dropped.
        """
        new = HistoryRing(size, top_k, monitored, self.device, self.d_sae)
        written = int(self.written)
        held = min(written, self.size, size)
        if held == 0:
            return new
        order = (torch.arange(written - held, written, device=self.device)) % self.size
        k = min(top_k, self.top_k)
        new.top_idx[:held].fill_(-1)
        new.top_idx[:held, :k] = self.top_idx[order, :k]
        new.top_val[:held, :k] = self.top_val[order, :k]
        old_cols = {f: i for i, f in enumerate(self.monitored)}
        for j, f in enumerate(monitored):
            i = old_cols.get(f)
            new.values[:held, j] = self.values[order, i] if i is not None else float("nan")
        for name in ("request", "row", "position", "timestamp", "token"):
            getattr(new, name)[:held] = getattr(self, name)[order]
        new.written.fill_(held)
        new._names = self._names.copy(size + _SPARE_REQUEST_NAMES)
        return new

    def count(self) -> int:
        """Records currently held."""
        return int(min(int(self.written), self.size))

    @property
    def names_held(self) -> int:
        """Request ids remembered for the records (bounded by size + a spare)."""
        return len(self._names)

    def gather_last(self, last: int) -> HistoryTail:
        """The newest `last` slots on the device, oldest first, and how many of them hold a
        record; reads nothing back to the host (`snapshot.records.history_rows` decodes)."""
        want = min(max(last, 0), self.size)
        n = max(1, want)  # gather at least one slot; `held` says how many are records
        order = (self.written - n + torch.arange(n, device=self.device)) % self.size
        cols = [c.index_select(0, order) for c in (self.top_idx, self.top_val, self.values,
                                                    self.request, self.row, self.position,
                                                    self.timestamp, self.token)]
        names = self._names.snapshot()
        return HistoryTail(cols, self.written.clamp_max(want), names, self.monitored)

    def read(self, last: int | None = None) -> HistoryRows:
        """Copy the held records (only the newest `last` if given) to the host, oldest first."""
        tail = self.gather_last(self.size if last is None else last)
        *host, held = start_copy([*tail.columns, tail.held])()
        return history_rows(host, int(held), tail.names)
