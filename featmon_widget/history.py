"""Preallocated ring buffer of per-token records, on the device.

Memory depends on history_size, top_k and the number of explicit features only. Each forward
writes the last `history_size` of its real tokens; which rows those are is worked out on the
device (ranks from a cumulative sum, then a scatter), so no count is read back on the hot path.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from .features import DenseFeatures, SparseFeatures
from .transfer import start_copy

Tensor = torch.Tensor

# Names kept beyond history_size: a write whose rows were all padding adds a name but no record.
_SPARE_REQUEST_NAMES = 1024


@dataclass
class HistoryRows:
    """History copied to the host, oldest first."""

    top_idx: list[list[int]]
    top_val: list[list[float]]
    values: list[list[float]]
    request_ids: list[str]
    rows: list[int]
    positions: list[int]
    timestamps: list[float]

    def __len__(self) -> int:
        return len(self.positions)


class HistoryRing:
    """Per token: its top_k (index, value) pairs, the explicit features' values, request, position.

    One extra slot past the end is a write sink for rows that are not kept.
    """

    def __init__(self, size: int, top_k: int, explicit: tuple[int, ...], device: torch.device):
        self.size = size
        self.top_k = top_k
        self.explicit = explicit
        self.device = torch.device(device)
        slots = size + 1
        dev = self.device
        self.top_idx = torch.zeros(slots, top_k, dtype=torch.int32, device=dev)
        self.top_val = torch.zeros(slots, top_k, dtype=torch.float32, device=dev)
        self.values = torch.zeros(slots, len(explicit), dtype=torch.float32, device=dev)
        self.request = torch.zeros(slots, dtype=torch.int64, device=dev)
        self.row = torch.zeros(slots, dtype=torch.int32, device=dev)
        self.position = torch.zeros(slots, dtype=torch.int64, device=dev)
        self.timestamp = torch.zeros(slots, dtype=torch.float64, device=dev)
        self.written = torch.zeros((), dtype=torch.int64, device=dev)
        self._explicit_index = torch.tensor(explicit, dtype=torch.int64, device=dev)
        # Names of the latest writes: a write older than the last `size` that stored a record
        # cannot still have one in the ring.
        self._request_names: OrderedDict[int, str] = OrderedDict()
        self._next_code = 0
        self._lock = threading.Lock()

    def write(self, features: DenseFeatures | SparseFeatures, valid: Tensor, rows: Tensor,
              positions: Tensor, request_id: str, timestamp: float) -> None:
        """Append the last `size` valid rows of `features` (with `rows`, `positions` [N])."""
        n = features.n
        keep_n = min(n, self.size)
        if keep_n == 0:
            return
        code = self._register(request_id)
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

        chosen = features.rows(pick)
        top_idx, top_val = chosen.top(self.top_k)
        self.top_idx.index_copy_(0, dest, top_idx)
        self.top_val.index_copy_(0, dest, top_val)
        if self.explicit:
            self.values.index_copy_(0, dest, chosen.columns(self._explicit_index))
        self.request.index_fill_(0, dest, code)
        self.row.index_copy_(0, dest, rows.index_select(0, pick).to(torch.int32))
        self.position.index_copy_(0, dest, positions.index_select(0, pick))
        self.timestamp.index_fill_(0, dest, timestamp)
        self.written += total.clamp_max(keep_n)

    def _register(self, request_id: str) -> int:
        with self._lock:
            code = self._next_code
            self._next_code += 1
            self._request_names[code] = request_id
            while len(self._request_names) > self.size + _SPARE_REQUEST_NAMES:
                self._request_names.popitem(last=False)
        return code

    def clear(self) -> int:
        """Empty the ring; returns how many records it held (reads one count from the device)."""
        held = self.count()
        self.written.zero_()
        with self._lock:
            self._request_names.clear()
        return held

    def resized(self, size: int, top_k: int, explicit: tuple[int, ...]) -> HistoryRing:
        """A new ring with the newest records of this one carried over.

        Extra top-k slots are filled with index -1; explicit features this ring did not record
        get NaN. Nothing that fits is dropped.
        """
        new = HistoryRing(size, top_k, explicit, self.device)
        written = int(self.written)
        held = min(written, self.size, size)
        if held == 0:
            return new
        order = (torch.arange(written - held, written, device=self.device)) % self.size
        k = min(top_k, self.top_k)
        new.top_idx[:held].fill_(-1)
        new.top_idx[:held, :k] = self.top_idx[order, :k]
        new.top_val[:held, :k] = self.top_val[order, :k]
        old_cols = {f: i for i, f in enumerate(self.explicit)}
        for j, f in enumerate(explicit):
            i = old_cols.get(f)
            new.values[:held, j] = self.values[order, i] if i is not None else float("nan")
        for name in ("request", "row", "position", "timestamp"):
            getattr(new, name)[:held] = getattr(self, name)[order]
        new.written.fill_(held)
        with self._lock:
            new._request_names = OrderedDict(self._request_names)
        new._next_code = self._next_code
        return new

    def count(self) -> int:
        """Records currently held."""
        return int(min(int(self.written), self.size))

    def gather_last(self, last: int) -> tuple[list[Tensor], Tensor, dict[int, str]]:
        """The newest `last` slots on the device, oldest first, and how many of them hold a
        record; reads nothing back to the host (see `rows_from`)."""
        want = min(max(last, 0), self.size)
        n = max(1, want)  # gather at least one slot; `held` says how many are records
        order = (self.written - n + torch.arange(n, device=self.device)) % self.size
        cols = [c.index_select(0, order) for c in (self.top_idx, self.top_val, self.values,
                                                    self.request, self.row, self.position,
                                                    self.timestamp)]
        with self._lock:
            names = dict(self._request_names)
        return cols, self.written.clamp_max(want), names

    @staticmethod
    def rows_from(cols: list[Tensor], held: int, names: dict[int, str]) -> HistoryRows:
        """`HistoryRows` from host copies of `gather_last`'s columns."""
        top_idx, top_val, values, request, row, position, timestamp = (
            c[c.shape[0] - held:].tolist() for c in cols
        )
        return HistoryRows(
            top_idx=top_idx, top_val=top_val, values=values,
            request_ids=[names.get(c, "?") for c in request],
            rows=row, positions=position, timestamps=timestamp,
        )

    def read(self, last: int | None = None) -> HistoryRows:
        """Copy the held records (only the newest `last` if given) to the host, oldest first."""
        cols, held, names = self.gather_last(self.size if last is None else last)
        *host, held_h = start_copy([*cols, held])()
        return self.rows_from(host, int(held_h), names)
