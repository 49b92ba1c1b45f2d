"""Every active watch of a monitor, recorded in one batched pass per forward.

The watches' rings live in joint device tensors (each watch holds views of its part), so a
forward costs the same dozen kernels whatever the number of watches: every watched column is
gathered once, compared once with its threshold, ranked per watch (a hit's place among its
watch's hits: earlier tokens first, then the watch's feature order, as one watch alone would
write them) and scattered into the rings at once. Adding or removing a watch (not the hot path)
rebuilds the joint tensors, copying what the others hold; a removed watch keeps a copy of its
ring, so its last hits are still delivered.
"""

from __future__ import annotations

import itertools

import torch

from ..record.features import DenseFeatures, SparseFeatures
from ..record.requests import WriteNames
from .watch import WATCH_CAPACITY, Watch

Tensor = torch.Tensor


class WatchSet:
    """The active watches (in the order they were made) and their joint rings."""

    def __init__(self, device: torch.device) -> None:
        self.watches: list[Watch] = []
        self.device = device
        # One request code per forward, shared by every watch (each ring keeps its latest).
        self.names = WriteNames(WATCH_CAPACITY + 1024)
        self.fired = torch.zeros(0, 0, dtype=torch.bool, device=device)  # [batch, watches]
        self._rebuild()

    def add(self, watch: Watch) -> None:
        """Record `watch` from the next forward on."""
        self.names.keep = max(self.names.keep, watch.capacity + 1024)
        self.watches.append(watch)
        self._rebuild()

    def remove(self, watch: Watch) -> None:
        """Stop recording `watch`; it keeps its ring (and its hits still to deliver)."""
        index = self.watches.index(watch)
        watch.detach(self.fired[:, index] if self.fired.shape[0] else None)
        del self.watches[index]
        self._rebuild()

    def move_to(self, device: torch.device) -> None:
        """Follow the monitor to `device` (before anything was recorded): empty rings there."""
        self.device = device
        for watch in self.watches:
            watch.move_to(device)
        self.fired = torch.zeros(0, 0, dtype=torch.bool, device=device)
        self._rebuild(copy=False)

    def clear_rows(self, watch: Watch) -> None:
        """Forget which rows `watch` has fired in."""
        if self.fired.shape[0]:
            self.fired[:, self.watches.index(watch)] = False

    def rows_fired(self, watch: Watch) -> Tensor:
        """Which rows of the latest batch `watch` fired in since its rows were cleared."""
        if not self.fired.shape[0]:
            return self.fired.new_zeros(0)
        return self.fired[:, self.watches.index(watch)]

    def _rebuild(self, copy: bool = True) -> None:
        dev, watches = self.device, self.watches
        caps = [w.capacity for w in watches]
        widths = [len(w.features) for w in watches]
        base = list(itertools.accumulate(caps, initial=0))[:-1]
        start = list(itertools.accumulate(widths, initial=0))[:-1]
        total = sum(caps)
        owner = [j for j, n in enumerate(widths) for _ in range(n)]
        long = dict(dtype=torch.int64, device=dev)
        self._owner = torch.tensor(owner, **long)
        self._index = torch.tensor([f for w in watches for f in w.features], **long)
        self._above = torch.tensor([a for w in watches for a in w.above], dtype=torch.float64,
                                   device=dev)
        self._start = torch.tensor([start[j] for j in owner], **long)
        self._base = torch.tensor([base[j] for j in owner], **long)
        self._cap = torch.tensor([caps[j] for j in owner], **long)
        unique = sorted({f for w in watches for f in w.features})  # each column gathered once
        where = {f: i for i, f in enumerate(unique)}
        self._unique = torch.tensor(unique, **long)
        self._column = torch.tensor([where[f] for w in watches for f in w.features], **long)
        self._lookup: Tensor | None = None  # feature -> its column among _unique (TopK input)
        self._sink = total  # the last slot takes the writes of columns without a hit
        empty = {"token": -1}  # what an unwritten slot holds (0 elsewhere)
        rings = {name: torch.full((total + 1,), empty.get(name, 0), dtype=dtype, device=dev)
                 for name, dtype in Watch.RING_FIELDS}
        written = torch.zeros(len(watches), **long)
        if copy and watches:  # carry every ring over, one copy a field
            for name, ring in rings.items():
                torch.cat([getattr(w, name) for w in watches], out=ring[:total])
            torch.stack([w.written for w in watches], out=written)
        for j, watch in enumerate(watches):  # then hand out views
            part = slice(base[j], base[j] + caps[j])
            watch.join(self, {name: ring[part] for name, ring in rings.items()}, written[j])
        self._rings, self.written = rings, written
        if self.fired.shape[1] != len(watches):
            self.fired = torch.zeros(0, len(watches), dtype=torch.bool, device=dev)

    def record(self, features: DenseFeatures | SparseFeatures, valid: Tensor, batch: int,
               tokens: int, positions: Tensor, request_id: str,
               token_ids: Tensor | None) -> None:
        """Append this forward's hits to every watch's ring (no host read)."""
        if not self.watches:
            return
        values = self._columns(features).index_select(1, self._column)
        values = values.to(torch.float64)  # [N, F]: every watched column of every watch
        hit = (values > self._above) & valid[:, None]  # NaN is never above
        ones = hit.to(torch.int64)
        n, width = hit.shape
        count = ones.new_zeros(n, len(self.watches)).index_add_(1, self._owner, ones)
        per_row = count.view(batch, tokens, -1).sum(1) > 0  # [batch, watches]
        if self.fired.shape[0] != batch:
            self.fired = per_row
        else:
            self.fired |= per_row
        # A hit's rank in its watch: its watch's hits in earlier tokens, then in earlier
        # columns of this token (each watch's columns are contiguous).
        earlier = (count.cumsum(0) - count).index_select(1, self._owner)
        inrow = ones.cumsum(1) - ones
        inrow = inrow - inrow.index_select(1, self._start)
        rank = self.written.index_select(0, self._owner) + earlier + inrow
        slot = torch.where(hit, self._base + rank % self._cap, self._sink).reshape(-1)
        token_row = torch.arange(n, device=self.device).repeat_interleave(width)
        code = self.names.register(request_id)
        rings = self._rings
        rings["feature"].index_copy_(0, slot, self._index.repeat(n))
        rings["value"].index_copy_(0, slot, values.reshape(-1).to(torch.float32))
        rings["request"].index_fill_(0, slot, code)
        rings["row"].index_copy_(0, slot, token_row // tokens)
        rings["position"].index_copy_(0, slot, positions.index_select(0, token_row))
        if token_ids is None:
            rings["token"].index_fill_(0, slot, -1)
        else:
            rings["token"].index_copy_(0, slot, token_ids.index_select(0, token_row))
        self.written += count.sum(0)

    def _columns(self, features: DenseFeatures | SparseFeatures) -> Tensor:
        """Values of the distinct watched features per row, float32 [N, U]: a gather of the
        dense columns, or one scatter of a TopK output (O(N k), however many are watched)."""
        index = self._unique
        if isinstance(features, DenseFeatures):
            return features.columns(index)
        lookup = self._lookup
        if lookup is None or lookup.shape[0] != features.d_sae + 1:  # once per set of watches
            lookup = torch.full((features.d_sae + 1,), len(index), dtype=torch.int64,
                                device=index.device)
            lookup[index] = torch.arange(len(index), device=index.device)
            self._lookup = lookup
        picked = lookup[torch.where(features.indices >= 0, features.indices, features.d_sae)]
        out = torch.zeros(features.n, len(index) + 1, dtype=torch.float32, device=index.device)
        out.scatter_(1, picked, features.values.float())  # the spare column takes the rest
        return out[:, :-1]
