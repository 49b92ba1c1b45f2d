"""Top-activating examples per feature, kept on the device.

For every feature the table keeps the `per_feature` highest activations seen since the last
reset, at most one per sequence row of a forward pass (the row's maximum, at its earliest
token), each with its value, request, row, position and a window of token ids around it. An
activation is a candidate when it is finite and above the threshold in force when it was
recorded; ties go to the earliest (forward pass, then row).

Each feature's examples are kept best first in [d_sae, per_feature] arrays (value -inf marks
an empty slot). On the CPU the dense statistics pass finds each row's maxima while it streams
the features (`stats/csrc/dense_moments.c`; `row_maxima_wanted`), or a small C kernel
(`stats/csrc/examples.c`) does it in a pass of its own, and a second one inserts the new
examples. Elsewhere the merge is one `topk`: a key
packs each value and its age into one int64 (the float32 bits made order-preserving in the high
32 bits, `2**32 - 1 - rank` in the low ones, where kept examples rank 0.. best first and a new
forward's row b ranks `per_feature + b`); keys are unique, so the kept set is exactly what an
offline sort keeps. No host read either way. Rows are merged in chunks so the working set stays
bounded for any batch.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch

from ..stats.backend import Backend
from ..stats.native import ExampleKernels, RowMaxima
from .example_state import ExampleState
from .features import DenseFeatures, SparseFeatures
from .requests import RequestNames, automatic_number
from .row_maxima import EMPTY, dense_row_maxima, pack, rank_of, sparse_row_maxima, value_of

Tensor = torch.Tensor

# Candidate rows merged at once: a chunk's [rows, d_sae] keys stay a few megabytes.
_CHUNK_ELEMENTS = 1 << 21
# Requests whose last tokens are remembered as the left context of their next forward.
MAX_TRACKED_REQUESTS = 4096


class ExampleRows(NamedTuple):
    """One feature's kept examples on the host, best first."""

    values: list[float]
    requests: list[int]
    rows: list[int]
    positions: list[int]
    windows: list[list[int]]  # token ids [2 * window + 1], -1 where unknown or outside
    window_acts: list[list[float]]  # the feature on each window token (bfloat16), NaN: unknown


class ExampleTable(ExampleState):
    """The kept examples of every feature (see module doc), and the left context (last
    `window` real tokens per row) of each request that may continue. What is saved, reset and
    counted of it: `example_state.ExampleState`."""

    def __init__(self, d_sae: int, per_feature: int, window: int, device: torch.device,
                 backend: Backend | None = None):
        # Where the C kernels run, and the runner of the torch merge's compiled functions.
        self.backend = backend if backend is not None else Backend(native=False, compile=False)
        self.runner = self.backend.runner
        self.d_sae = d_sae
        self.per_feature = per_feature
        self.window = window
        self.device = torch.device(device)
        e, f, dev = per_feature, d_sae, self.device
        self.value = torch.full((f, e), float("-inf"), dtype=torch.float32, device=dev)
        self.request = torch.zeros(f, e, dtype=torch.int64, device=dev)
        self.row = torch.zeros(f, e, dtype=torch.int32, device=dev)
        self.position = torch.zeros(f, e, dtype=torch.int32, device=dev)
        self.tokens = torch.full((f, e, 2 * window + 1), -1, dtype=torch.int32, device=dev)
        # The feature's activation on each window token; only tokens of the example's own
        # forward are known (bfloat16: enough to shade text, the example's value is exact).
        self.acts = torch.full((f, e, 2 * window + 1), float("nan"), dtype=torch.bfloat16,
                               device=dev)
        self.names = RequestNames()
        self._tails: OrderedDict[str, Tensor] = OrderedDict()
        # Other tables whose records use these request names (the sample of activating
        # tokens): a name they hold is never forgotten either.
        self.holders: list[ExampleTable] = []

    @property
    def tails(self) -> OrderedDict[str, Tensor]:
        """Each request's left context (its last `window` real tokens per row, [rows,
        window] int64), oldest request first. Replace it whole, never change it in place."""
        return self._tails

    @tails.setter
    def tails(self, tails: OrderedDict[str, Tensor]) -> None:
        self._tails = OrderedDict(tails)

    def row_maxima_wanted(self, batch: int, tokens: int) -> int | None:
        """`tokens` when the statistics pass should hand a dense forward of `batch` sequences
        its row maxima (see `update`): the table keeps examples, the native statistics kernel
        can give them on its device, and they fit one merge chunk."""
        if (self.per_feature == 0 or tokens < 1
                or not self.backend.statistics_row_maxima(self.device)):
            return None
        return tokens if batch <= self._chunk_rows() else None

    def _chunk_rows(self) -> int:
        return max(1, _CHUNK_ELEMENTS // max(self.d_sae, 1))

    def update(self, features: DenseFeatures | SparseFeatures, valid: Tensor, positions: Tensor,
               batch: int, tokens: int, request_id: str, token_ids: Tensor | None,
               threshold: float, maxima: RowMaxima | None = None,
               code: int | None = None,
               context: tuple[Tensor, Tensor, Tensor] | None = None) -> None:
        """Merge one forward's row maxima (features [batch * tokens, d_sae], `valid`,
        `positions` and `token_ids` [batch * tokens]) into the table. `maxima` [batch, d_sae]:
        the row maxima already found by the statistics pass (over the same valid rows and
        threshold), else they are found here; `context`: the forward's `context`, if taken."""
        if self.per_feature == 0:
            return
        if context is None:
            context = self.context(request_id, valid, token_ids, batch, tokens)
        context, source, rank = context
        if code is None:
            code = self.code_of(request_id)
        native = self.backend.example_merge(self.device)
        if native is not None:
            acts, indices = _native_features(features)
            positions = positions.contiguous()
        if native is not None and isinstance(features, SparseFeatures):
            # TopK input touches k features a token: merge a list of candidates, O(N k).
            self._merge_sparse_list(native, features, valid, positions, tokens, rank, context,
                                    source, acts, indices, code, threshold)
            return
        chunk = batch if maxima is not None else self._chunk_rows()
        for b0 in range(0, batch, chunk):
            b1 = min(batch, b0 + chunk)
            if maxima is None:
                value, t = self._row_maxima(features, valid, threshold, b0, b1, tokens)
            else:
                value, t = maxima
            if native is None:
                self._merge(value, t, b0, tokens, positions, rank, context, source, features,
                            code)
            else:
                native.merge(value, t, b0, tokens, positions, rank, context, source,
                             acts, indices, code, self.value, self.request, self.row,
                             self.position, self.tokens, self.acts)

    def _merge_sparse_list(self, native: ExampleKernels, features: SparseFeatures,
                           valid: Tensor, positions: Tensor, tokens: int, rank: Tensor,
                           context: Tensor, source: Tensor, acts: Tensor, indices: Tensor | None,
                           code: int, threshold: float) -> None:
        """The CPU merge of a TopK forward from its candidates only: per (row, feature) the
        best stored value above the threshold and its earliest token (as `sparse_row_maxima`,
        without the [rows, d_sae] arrays), ordered by feature then row."""
        n, k = features.indices.shape
        batch = n // tokens
        index = features.indices
        values = features.values.to(torch.float32)
        good = (valid[:, None] & (index >= 0) & (index < self.d_sae) & ((values - values) == 0)
                & (values > threshold))
        token = (torch.arange(n) % tokens)[:, None].expand(n, k)
        b = (torch.arange(n) // tokens)[:, None].expand(n, k)
        slot = (index.clamp(0, self.d_sae - 1) * batch + b)[good]  # feature, then row
        keys = pack(values, token, good)[good]
        slots, inverse = torch.unique(slot, return_inverse=True)  # sorted: feature, then row
        best = torch.full_like(slots, EMPTY).scatter_reduce_(0, inverse, keys, "amax")
        assert indices is not None
        native.merge_list(slots // batch, slots % batch, value_of(best).contiguous(),
                          rank_of(best).clamp(0, tokens - 1), tokens, positions, rank, context,
                          source, acts, indices, code, self.value, self.request, self.row,
                          self.position, self.tokens, self.acts)

    def code_of(self, request_id: str) -> int:
        """The examples' code of `request_id` (a ValueError if it cannot be stored)."""
        return self.names.code(request_id, self._held_codes)

    def _held_codes(self) -> set[int]:
        """The request codes of the examples kept now (reads the table: rarely called)."""
        return {code for table in (self, *self.holders)
                for code in table.request[table.value > float("-inf")].unique().tolist()}

    def context(self, request_id: str, valid: Tensor, token_ids: Tensor | None, batch: int,
                tokens: int) -> tuple[Tensor, Tensor, Tensor]:
        """The windows' context of one forward (`valid` [batch * tokens]), taken once per
        forward (it advances the request's left context). Per row: the request's last
        `window` real tokens, then this forward's real tokens in order, then `window` unknowns
        ([batch, tokens + 2 window]); per context column, the
        token of this forward it holds (-1 for none); and each token's rank among this
        forward's real tokens of its row ([batch, tokens])."""
        w, dev = self.window, self.device
        valid = valid.reshape(batch, tokens)
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
        if w and automatic_number(request_id) is None:  # an auto-N request never continues
            self._tails[request_id] = context.gather(
                1, real + torch.arange(w, device=dev))  # the last w real tokens so far
            self._tails.move_to_end(request_id)
            while len(self._tails) > MAX_TRACKED_REQUESTS:
                self._tails.popitem(last=False)
        rank = valid.to(torch.int64).cumsum(1) - 1
        held = torch.arange(tokens, device=dev) < real
        source = torch.cat([unknown, torch.where(held, order, -1), unknown], 1)
        return context, source, rank

    def _merge(self, value: Tensor, t: Tensor, b0: int, tokens: int, positions: Tensor,
               rank: Tensor, context: Tensor, source: Tensor,
               features: DenseFeatures | SparseFeatures, code: int) -> None:
        """The torch merge (see module doc) of candidates [rows, F] of rows b0.."""
        e, dev = self.per_feature, self.device
        rows = value.shape[0]
        slot = torch.arange(e, device=dev)
        old = pack(self.value, slot, self.value > float("-inf"))
        new_rank = e + torch.arange(rows, device=dev)
        candidate = value.t()
        new = pack(candidate, new_rank, candidate > float("-inf"))
        keys, src = torch.cat([old, new], 1).topk(e, dim=1)
        b = (src - e).clamp_min(0)  # row within the chunk
        local = b * tokens + t.t().gather(1, b)  # token within the chunk
        new_value = torch.where(keys != EMPTY, value_of(keys), float("-inf"))
        self.write_merged(src, local, new_value, b0, rows, tokens, positions, rank, context,
                          source, features, code)

    def write_merged(self, src: Tensor, local: Tensor, new_value: Tensor, b0: int, rows: int,
                     tokens: int, positions: Tensor, rank: Tensor, context: Tensor,
                     source: Tensor, features: DenseFeatures | SparseFeatures,
                     code: int) -> None:
        """Replace the kept records [F, E] by a merge's: per slot, `src` < E keeps old slot
        `src`, else the candidate at token `local` of rows b0..b0 + rows (flat within them)
        takes it with value `new_value` (-inf: empty)."""
        e, w, f, dev = self.per_feature, self.window, self.d_sae, self.device
        from_old = src < e
        # Every field is one gather from [kept slots, then this chunk's tokens].
        feature = torch.arange(f, device=dev)[:, None]
        pick = torch.where(from_old, feature * e + src, f * e + local).reshape(-1)
        span = slice(b0 * tokens, (b0 + rows) * tokens)
        chunk_rows = torch.arange(b0, b0 + rows, device=dev).repeat_interleave(tokens)
        # Each token's window: context columns rank .. rank + 2w of its row (see `context`).
        cols = (rank[b0:b0 + rows].reshape(-1, 1) + torch.arange(2 * w + 1, device=dev))
        cols = cols.clamp(0, context.shape[1] - 1).view(rows, -1)
        windows = context[b0:b0 + rows].gather(1, cols).view(-1, 2 * w + 1)
        held = source[b0:b0 + rows].gather(1, cols).view(-1, 2 * w + 1)  # token in its row
        for field, fresh in ((self.position, positions[span]),
                             (self.row, chunk_rows.to(torch.int32)),
                             (self.request, torch.full_like(chunk_rows, code))):
            field.copy_(torch.cat([field.reshape(-1), fresh]).index_select(0, pick)
                        .view(f, e))
        self.tokens.copy_(torch.cat([self.tokens.view(f * e, -1), windows.to(torch.int32)])
                          .index_select(0, pick).view(f, e, -1))
        self.acts.copy_(self._window_acts(features, held, local, from_old, src, new_value, b0,
                                          tokens))
        self.value.copy_(new_value)

    def _window_acts(self, features: DenseFeatures | SparseFeatures, held: Tensor,
                     local: Tensor, from_old: Tensor, src: Tensor, new_value: Tensor, b0: int,
                     tokens: int) -> Tensor:
        """The torch merge's window activations [F, E, span]: kept slots keep theirs; a new
        one reads the feature on each window token of its forward (with sparse input only on
        the activating token, whose value is the example's)."""
        e, f, dev = self.per_feature, self.d_sae, self.device
        kept = self.acts.gather(1, src.clamp_max(e - 1)[..., None].expand_as(self.acts))
        span = held.shape[1]
        token = held.index_select(0, local.reshape(-1)).view(f, e, span)  # -1: not known
        row = (b0 + local // tokens)[..., None]
        feature = torch.arange(f, device=dev)[:, None, None]
        if isinstance(features, DenseFeatures):
            flat = ((row * tokens + token.clamp_min(0)) * f + feature).reshape(-1)
            fresh = features.acts.reshape(-1).index_select(0, flat).view(f, e, span)
            fresh = torch.where(token >= 0, fresh.to(torch.float32), float("nan"))
        else:
            centre = torch.arange(span, device=dev) == self.window
            fresh = torch.where(centre, new_value[..., None], float("nan"))
        return torch.where(from_old[..., None], kept, fresh.to(torch.bfloat16))

    def read(self, feature: int, k: int) -> ExampleRows:
        """Feature `feature`'s best `k` examples, copied to the host."""
        return read_rows([t[feature] for t in self.record_tensors()], k)

    def request_name(self, code: int) -> str:
        """The request id of a record's request `code`."""
        return self.names.name(code)

    def record_tensors(self) -> list[Tensor]:
        """The records' tensors in `ExampleRows` order: value, request, row, position, token
        windows, window activations."""
        return [self.value, self.request, self.row, self.position, self.tokens, self.acts]

    def centre_tokens(self, index: Tensor) -> Tensor:
        """The token id each kept example of the features `index` is at, best first, -1 for an
        empty slot or an unknown token ([len(index), per_feature] int32; on the device)."""
        held = self.value.index_select(0, index) > float("-inf")
        return torch.where(held, self.tokens.index_select(0, index)[:, :, self.window], -1)

    def resized(self, per_feature: int, window: int) -> ExampleTable:
        """A table with room for `per_feature` examples and `window` tokens each side, holding
        the best examples of this one that fit (windows cut or padded around their token)."""
        new = ExampleTable(self.d_sae, per_feature, window, self.device, self.backend)
        new.names = self.names
        keep = min(per_feature, self.per_feature)
        for name in ("value", "request", "row", "position"):
            getattr(new, name)[:, :keep] = getattr(self, name)[:, :keep]
        cut = min(window, self.window)
        for name in ("tokens", "acts"):
            getattr(new, name)[:, :keep, window - cut: window + cut + 1] = \
                getattr(self, name)[:, :keep, self.window - cut: self.window + cut + 1]
        if window == self.window:
            new._tails = self._tails
        return new


    def _row_maxima(self, features: DenseFeatures | SparseFeatures,
                    valid: Tensor, threshold: float, b0: int, b1: int,
                    tokens: int) -> RowMaxima | tuple[Tensor, Tensor]:
        """For rows b0..b1-1 and every feature: the maximum candidate value (float32, -inf
        where none) and the earliest token holding it ([rows, d_sae] each)."""
        span = slice(b0 * tokens, b1 * tokens)
        if isinstance(features, DenseFeatures):
            acts = features.acts[span].view(b1 - b0, tokens, self.d_sae)
            ok = valid[span].view(b1 - b0, tokens)
            row_max = self.backend.example_row_max(acts)
            if row_max is not None:
                # Streams tokens in order: fast on every CPU.
                return row_max.row_max(acts.contiguous(), ok.contiguous(), threshold)
            return self.runner.run(dense_row_maxima, dense_row_maxima, acts, ok, threshold)
        return sparse_row_maxima(features.indices[span], features.values[span], valid[span],
                                 threshold, b1 - b0, tokens, self.d_sae)


def read_rows(record: list[Tensor], k: int) -> ExampleRows:
    """The first `k` held records of one feature's `ExampleTable.record_tensors` ([E, ...]
    each; held: value above -inf, a prefix), copied to the host."""
    value, request, row, position, tokens, acts = record
    values = value[:k].cpu()
    held = int((values > float("-inf")).sum())
    request, row, position = torch.stack([
        request[:held], row[:held].to(torch.int64), position[:held]]).cpu().tolist()
    windows = tokens[:held].to(torch.int64).cpu().tolist()
    window_acts = acts[:held].to(torch.float32).cpu().tolist()
    return ExampleRows(values[:held].tolist(), request, row, position, windows, window_acts)


def _native_features(features: DenseFeatures | SparseFeatures) -> tuple[Tensor, Tensor | None]:
    """The forward's features as the C merge reads them: dense float32/bfloat16, or TopK
    indices with float32 values."""
    if isinstance(features, DenseFeatures):
        acts = features.acts
        if acts.dtype not in (torch.float32, torch.bfloat16):
            acts = acts.to(torch.float32)
        return acts.contiguous(), None
    return (features.values.to(torch.float32).contiguous(),
            features.indices.to(torch.int64).contiguous())
