"""Top-activating examples per feature, kept on the device.

For every feature the table keeps the `per_feature` highest activations seen since the last
reset, at most one per sequence row of a forward pass (the row's maximum, at its earliest
token), each with its value, request, row, position and a window of token ids around it. An
activation is a candidate when it is finite and above the threshold in force when it was
recorded; ties go to the earliest (forward pass, then row).

Each slot's key packs the value and its age into one int64: the float32 value's bits made
order-preserving in the high 32 bits, and `2**32 - 1 - rank` in the low ones, where kept examples
rank 0.. (best first) and a new forward's row b ranks `per_feature + b`. Keys are unique, so one
`topk` over [kept + new rows, d_sae] keeps exactly the examples an offline sort would, with no
host read. Rows are merged in chunks so the working set stays bounded for any batch.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import NamedTuple

import torch

from .features import DenseFeatures, SparseFeatures

Tensor = torch.Tensor

EMPTY = torch.iinfo(torch.int64).min  # the key of an empty slot
_LOW = 1 << 32
# Candidate rows merged at once: a chunk's [rows, d_sae] keys stay a few megabytes.
_CHUNK_ELEMENTS = 1 << 21
# Requests whose last tokens are remembered as the left context of their next forward.
MAX_TRACKED_REQUESTS = 4096
_AUTO = re.compile(r"auto-(0|[1-9][0-9]*)")


def ordered_bits(values: Tensor) -> Tensor:
    """float32 -> int32 with the same order (negative floats have their magnitude bits
    flipped); its own inverse."""
    bits = values.contiguous().view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def value_of(keys: Tensor) -> Tensor:
    """The float32 values packed in `keys` (meaningless for empty slots)."""
    return ordered_bits_inverse((keys >> 32).to(torch.int32))


def ordered_bits_inverse(ordered: Tensor) -> Tensor:
    """Inverse of `ordered_bits`."""
    return (ordered ^ ((ordered >> 31) & 0x7FFFFFFF)).view(torch.float32)


class RequestNames:
    """Request ids as int64 codes: automatic ids (`auto-N`) by their number, others interned
    (so codes held by old examples never lose their name)."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}
        self._names: list[str] = []

    def code(self, name: str) -> int:
        """The code of `name`."""
        auto = _AUTO.fullmatch(name)
        if auto:
            return -1 - int(auto.group(1))
        code = self._codes.get(name)
        if code is None:
            code = self._codes[name] = len(self._names)
            self._names.append(name)
        return code

    def name(self, code: int) -> str:
        """The request id of `code`."""
        return f"auto-{-1 - code}" if code < 0 else self._names[code]


class ExampleRows(NamedTuple):
    """One feature's kept examples on the host, best first."""

    values: list[float]
    requests: list[int]
    rows: list[int]
    positions: list[int]
    windows: list[list[int]]  # token ids [2 * window + 1], -1 where unknown or outside


class ExampleTable:
    """The kept examples of every feature (see module doc), and the left context (last
    `window` real tokens per row) of each request that may continue."""

    def __init__(self, d_sae: int, per_feature: int, window: int, device: torch.device):
        self.d_sae = d_sae
        self.per_feature = per_feature
        self.window = window
        self.device = torch.device(device)
        e, f, dev = per_feature, d_sae, self.device
        self.keys = torch.full((e, f), EMPTY, dtype=torch.int64, device=dev)
        self.request = torch.zeros(e, f, dtype=torch.int64, device=dev)
        self.row = torch.zeros(e, f, dtype=torch.int32, device=dev)
        self.position = torch.zeros(e, f, dtype=torch.int64, device=dev)
        self.tokens = torch.full((e, f, 2 * window + 1), -1, dtype=torch.int32, device=dev)
        self.names = RequestNames()
        self._tails: OrderedDict[str, Tensor] = OrderedDict()

    @property
    def nbytes(self) -> int:
        """Device bytes held by the table."""
        return sum(t.numel() * t.element_size()
                   for t in (self.keys, self.request, self.row, self.position, self.tokens))

    def clear(self) -> None:
        """Forget every example (the requests' left contexts stay)."""
        self.keys.fill_(EMPTY)
        self.tokens.fill_(-1)

    def update(self, features: DenseFeatures | SparseFeatures, valid: Tensor, positions: Tensor,
               batch: int, tokens: int, request_id: str, token_ids: Tensor | None,
               threshold: float) -> None:
        """Merge one forward's row maxima (features [batch * tokens, d_sae], `valid`,
        `positions` and `token_ids` [batch * tokens]) into the table."""
        if self.per_feature == 0:
            return
        valid2 = valid.reshape(batch, tokens)
        context, rank = self._context(request_id, valid2, token_ids, batch, tokens)
        code = self.names.code(request_id)
        chunk = max(1, _CHUNK_ELEMENTS // max(self.d_sae, 1))
        for b0 in range(0, batch, chunk):
            b1 = min(batch, b0 + chunk)
            value, t = _row_maxima(features, valid, threshold, b0, b1, tokens, self.d_sae)
            self._merge(value, t, b0, tokens, positions, rank, context, code)

    def _context(self, request_id: str, valid: Tensor, token_ids: Tensor | None, batch: int,
                 tokens: int) -> tuple[Tensor, Tensor]:
        """Per row: the request's last `window` real tokens, then this forward's real tokens in
        order, then `window` unknowns ([batch, tokens + 2 window]); and each token's rank among
        this forward's real tokens of its row ([batch, tokens])."""
        w, dev = self.window, self.device
        if token_ids is None:
            current = torch.full((batch, tokens), -1, dtype=torch.int64, device=dev)
        else:
            current = torch.where(valid, token_ids.reshape(batch, tokens), -1)
        # Real tokens first, in order (a stable sort on "is padding").
        order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices
        compact = current.gather(1, order)
        tail = self._tails.get(request_id)
        if tail is None or tail.shape[0] != batch or tail.device != dev:
            tail = torch.full((batch, w), -1, dtype=torch.int64, device=dev)
        unknown = torch.full((batch, w), -1, dtype=torch.int64, device=dev)
        context = torch.cat([tail, compact, unknown], 1)
        real = valid.to(torch.int64).sum(1, keepdim=True)
        if w:
            self._tails[request_id] = context.gather(
                1, real + torch.arange(w, device=dev))  # the last w real tokens so far
            self._tails.move_to_end(request_id)
            while len(self._tails) > MAX_TRACKED_REQUESTS:
                self._tails.popitem(last=False)
        rank = valid.to(torch.int64).cumsum(1) - 1
        return context, rank

    def _merge(self, value: Tensor, t: Tensor, b0: int, tokens: int, positions: Tensor,
               rank: Tensor, context: Tensor, code: int) -> None:
        e, w, dev = self.per_feature, self.window, self.device
        rows = value.shape[0]
        kept = self.keys != EMPTY
        slot = torch.arange(e, device=dev)[:, None]
        old = torch.where(kept, ((self.keys >> 32) << 32) + (_LOW - 1 - slot), EMPTY)
        new_rank = e + torch.arange(rows, device=dev)[:, None]
        fresh = value > float("-inf")
        new = torch.where(fresh, (ordered_bits(value).to(torch.int64) << 32)
                          + (_LOW - 1 - new_rank), EMPTY)
        keys, src = torch.cat([old, new]).topk(e, dim=0)
        from_old = src < e
        old_slot = src.clamp_max(e - 1)
        b = (src - e).clamp_min(0)  # row within the chunk
        tok = t.gather(0, b)  # token within the row
        flat = (b0 + b) * tokens + tok
        where_ = torch.where
        self.position.copy_(where_(from_old, self.position.gather(0, old_slot),
                                   positions.index_select(0, flat.reshape(-1)).view_as(flat)))
        self.request.copy_(where_(from_old, self.request.gather(0, old_slot), code))
        self.row.copy_(where_(from_old, self.row.gather(0, old_slot),
                              (b0 + b).to(torch.int32)))
        # The window: context columns rank .. rank + 2w of the row (see `_context`).
        start = rank.reshape(-1).index_select(0, flat.reshape(-1)).view_as(flat)
        width = context.shape[1]
        # Slots not taken from this chunk may point anywhere: keep their reads in bounds.
        cols = (start[..., None] + torch.arange(2 * w + 1, device=dev)).clamp(0, width - 1)
        window = context.reshape(-1).index_select(
            0, ((b0 + b)[..., None] * width + cols).reshape(-1)).view(*flat.shape, 2 * w + 1)
        old_window = self.tokens.gather(0, old_slot[..., None].expand(-1, -1, 2 * w + 1))
        self.tokens.copy_(where_(from_old[..., None], old_window, window.to(torch.int32)))
        self.keys.copy_(keys)

    def read(self, feature: int, k: int) -> ExampleRows:
        """Feature `feature`'s best `k` examples, copied to the host."""
        keys = self.keys[:k, feature]
        cols = torch.stack([self.request[:k, feature], self.row[:k, feature].to(torch.int64),
                            self.position[:k, feature]]).cpu().tolist()
        keys_h = keys.cpu()
        held = int((keys_h != EMPTY).sum())
        values = value_of(keys_h[:held]).tolist()
        windows = self.tokens[:held, feature].to(torch.int64).cpu().tolist()
        request, row, position = (c[:held] for c in cols)
        return ExampleRows(values, request, row, position, windows)

    def resized(self, per_feature: int, window: int) -> ExampleTable:
        """A table with room for `per_feature` examples and `window` tokens each side, holding
        the best examples of this one that fit (windows cut or padded around their token)."""
        new = ExampleTable(self.d_sae, per_feature, window, self.device)
        new.names = self.names
        keep = min(per_feature, self.per_feature)
        new.keys[:keep] = self.keys[:keep]
        new.request[:keep] = self.request[:keep]
        new.row[:keep] = self.row[:keep]
        new.position[:keep] = self.position[:keep]
        cut = min(window, self.window)
        new.tokens[:keep, :, window - cut: window + cut + 1] = \
            self.tokens[:keep, :, self.window - cut: self.window + cut + 1]
        if window == self.window:
            new._tails = self._tails
        return new


def _row_maxima(features: DenseFeatures | SparseFeatures, valid: Tensor, threshold: float,
                b0: int, b1: int, tokens: int, d_sae: int) -> tuple[Tensor, Tensor]:
    """For rows b0..b1-1 and every feature: the maximum candidate value (float32, -inf where
    none) and the earliest token holding it ([rows, d_sae] each)."""
    rows = slice(b0 * tokens, b1 * tokens)
    ok = valid[rows]
    if isinstance(features, DenseFeatures):
        x = features.acts[rows].to(torch.float32)
        x = torch.where(ok[:, None] & ((x - x) == 0) & (x > threshold), x, float("-inf"))
        value, t = x.view(b1 - b0, tokens, d_sae).max(dim=1)
        return value, t
    idx = features.indices[rows]
    v = features.values[rows].to(torch.float32)
    k = idx.shape[1]
    n = idx.shape[0]
    t = (torch.arange(n, device=idx.device) % tokens)[:, None].expand(n, k)
    b = (torch.arange(n, device=idx.device) // tokens)[:, None].expand(n, k)
    good = ok[:, None] & (idx >= 0) & (idx < d_sae) & ((v - v) == 0) & (v > threshold)
    # Per (row, feature): the largest value, then the earliest token, in one int64 key.
    key = torch.where(good, (ordered_bits(v).to(torch.int64) << 32) + (_LOW - 1 - t), EMPTY)
    slot = torch.where(good, b * d_sae + idx.clamp(0, d_sae - 1), 0)
    best = torch.full(((b1 - b0) * d_sae,), EMPTY, dtype=torch.int64, device=idx.device)
    best.scatter_reduce_(0, slot.reshape(-1), key.reshape(-1), "amax")
    best = best.view(b1 - b0, d_sae)
    value = torch.where(best != EMPTY, value_of(best), float("-inf"))
    return value, (_LOW - 1 - (best & (_LOW - 1))).clamp(0, tokens - 1)
