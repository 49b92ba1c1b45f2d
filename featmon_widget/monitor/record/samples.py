"""A uniform random sample of each feature's activating tokens since the last reset, on the
device: the examples across the range of values, besides the top ones (`examples`).

Every (token, feature) has a random 63-bit key, a deterministic hash of the sample seed, the
process's rank and the token's counter (its row among every row fed since the reset, padding
included); each feature keeps the `per_feature` activating tokens (finite, above the threshold,
not padding) of smallest key. The kept set is a uniform sample without replacement of the
feature's activating tokens, the same for the same seed and input, and the ranks' samples merge
exactly: the union's smallest keys are a uniform sample of the union (ranks hash different
counters). A key's high half is `((hi ^ salt) * MIX mod 2**32) >> 1`, with the feature's salt
`fmix32(feature * SALT)`, its low half `lo`, where `(hi, lo)` is the token's hash (`token_keys`,
fmix32 rounds on the counter): for one feature the high half is a bijection of `hi`, so the
order is a uniform hash's, at one multiply per element (the kernel hashes every active element);
`lo` is a bijection of the counter's low 32 bits, so a feature's keys are distinct within 2**32
rows of one rank.

The records are the top examples' (value, request, row, position, token window, the feature's
activation in it): `SampleTable` is an `ExampleTable` whose slots are ordered by key, ascending
(an empty slot: key `EMPTY_KEY`, value -inf). On the CPU a C kernel folds a forward in
(`stats/csrc/examples.c`: the hash of every active element compared with the feature's current
last kept key, vectorized; inserts are rare; or the statistics pass's read finds them, `probe`);
elsewhere a torch merge per chunk of rows: each
chunk's `per_feature` smallest keys per feature, then one `topk` with the kept ones. Nothing is
read back. A statistics reset or a threshold change empties the sample (a sample across
thresholds would be uniform over neither).

Memory: per slot an int64 key besides the top examples' record (value, request, row, position,
and `2 * context_window + 1` token ids and bfloat16 activations): 130 bytes with the default
window of 8, 260 bytes per feature with the default 2 slots.
"""

from __future__ import annotations

from typing import Any

import torch

from ...checks import cut
from ..stats.backend import Backend
from ..stats.protocol import SAMPLE_MIX, SAMPLE_SALT
from ..stats.sample_probe import SampleProbe
from .cofiring import floor_in
from .examples import ExampleRows, ExampleTable, read_rows
from .features import DenseFeatures, SparseFeatures
from .registry import MAX_COUNT, Event, Rule, Spec, check_range, nbytes

Tensor = torch.Tensor

EMPTY_KEY = torch.iinfo(torch.int64).max
_M32 = 0xFFFFFFFF
# A rank's counters start at rank << RANK_SHIFT: distinct from every other rank's.
RANK_SHIFT = 40
# Request code of a record another rank kept (its names are that rank's).
REMOTE_REQUEST = torch.iinfo(torch.int64).min
# Candidate elements hashed at once by the torch merge (int64 keys: 16 MB).
_CHUNK_ELEMENTS = 1 << 21
FUSED_MIN = 1 << 18  # values of a dense forward below which `probe` declines (in cache)
_RECORD = ("key", "value", "request", "row", "position", "tokens", "acts")


def fmix32(h: Tensor) -> Tensor:
    """murmur3's 32-bit finalizer on uint32 values held in int64 (products wrap; the low 32
    bits are kept): the C kernel's `fmix32`, exactly."""
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _M32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def _mix(value: int) -> int:
    """`fmix32` of a host int (for the seed's salts; no tensor, nothing to sync)."""
    h = value & _M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def token_keys(seed: int, rank: int, first: int, n: int, device: torch.device) -> Tensor:
    """The hash `hi << 32 | lo` (int64 bits) of `n` tokens with counters first.. of `rank`."""
    counter = (torch.arange(n, dtype=torch.int64, device=device) + first
               + (rank << RANK_SHIFT))
    s0, s1 = _mix(seed ^ 0x243F6A88), _mix((seed >> 32) ^ 0x85A308D3)
    lo = fmix32((counter & _M32) ^ s0)
    hi = fmix32(lo ^ fmix32(((counter >> 32) + s1) & _M32))
    return (hi << 32) | lo


def feature_keys(token_key: Tensor, feature: Tensor) -> Tensor:
    """The keys of tokens `token_key` [...] for features `feature` (broadcast): the high half
    `((hi ^ salt) * MIX mod 2**32) >> 1` with the feature's salt `fmix32(feature * SALT)` (for
    one feature a bijection of `hi`: the order of a uniform hash), the low half `lo`."""
    hi, lo = (token_key >> 32) & _M32, token_key & _M32
    salt = fmix32((feature * SAMPLE_SALT) & _M32)
    return (((((hi ^ salt) * SAMPLE_MIX) & _M32) >> 1) << 32) | lo


def process_rank() -> int:
    """This process's rank in torch.distributed (0 outside a job)."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def union(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
    """Two samples' records ([F, E] fields by `_RECORD` name) as one: the E smallest keys of
    both, ascending (ties: `a` first)."""
    e = a["key"].shape[1]
    keys, src = torch.cat([a["key"], b["key"]], 1).sort(dim=1, stable=True)
    src = src[:, :e]
    out = {"key": keys[:, :e].contiguous()}
    for name in _RECORD[1:]:
        both = torch.cat([a[name], b[name]], 1)
        index = src if both.dim() == 2 else src[..., None].expand(-1, -1, both.shape[2])
        out[name] = both.gather(1, index)
    return out


def _empty(like: dict[str, Tensor]) -> dict[str, Tensor]:
    fill = {"key": EMPTY_KEY, "value": float("-inf"), "tokens": -1, "acts": float("nan")}
    return {n: torch.full_like(t, fill.get(n, 0)) for n, t in like.items()}


def pack_records(fields: dict[str, Tensor]) -> Tensor:
    """The records [F, E] by `_RECORD` name as one int64 [F, E, 5 + 2 span] (floats as
    their bits): how a sample travels between ranks."""
    columns = [fields["key"], fields["value"].view(torch.int32).to(torch.int64),
               fields["request"], fields["row"].to(torch.int64),
               fields["position"].to(torch.int64)]
    return torch.cat([torch.stack(columns, -1), fields["tokens"].to(torch.int64),
                      fields["acts"].view(torch.int16).to(torch.int64)], -1)


def unpack_records(packed: Tensor, span: int) -> dict[str, Tensor]:
    """Inverse of `pack_records`."""
    return {"key": packed[..., 0], "value": packed[..., 1].to(torch.int32).view(torch.float32),
            "request": packed[..., 2], "row": packed[..., 3].to(torch.int32),
            "position": packed[..., 4].to(torch.int32),
            "tokens": packed[..., 5:5 + span].to(torch.int32),
            "acts": packed[..., 5 + span:].to(torch.int16).view(torch.bfloat16)}


def union_rule(per_feature: int, span: int) -> Rule:
    """The ranks' samples (packed, flat) as one: their union, keeping each feature's
    smallest keys (merged a whole feature at a time)."""
    width = 5 + 2 * span

    def fields(flat: Tensor) -> dict[str, Tensor]:
        return unpack_records(flat.view(-1, per_feature, width), span)

    def start(like: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"record": pack_records(_empty(fields(like["record"]))).reshape(-1)}

    def combine(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
        merged = union(fields(a["record"]), fields(b["record"]))
        return {"record": pack_records(merged).reshape(-1)}

    return Rule("union of samples", start, combine, unit=max(1, per_feature * width))


class SampleTable(ExampleTable):
    """The sample of every feature's activating tokens (see module doc). Shares the top
    examples' request names (`names`) and takes their per-forward window `context`."""

    name = "samples"
    since_format = 4
    sync_rules = {"record": union_rule(0, 0)}  # per table: see __init__

    def __init__(self, d_sae: int, per_feature: int, window: int, seed: int,
                 device: torch.device, backend: Backend | None = None) -> None:
        super().__init__(d_sae, per_feature, window, device, backend)
        self.seed = seed
        self.key = torch.full((d_sae, per_feature), EMPTY_KEY, dtype=torch.int64,
                              device=self.device)
        self.rows_seen = 0  # rows fed since the reset: the next token's counter (host)
        self.remote: dict[str, Tensor] | None = None  # the other ranks' at the last sync
        self.sync_rules = {"record": union_rule(per_feature, 2 * window + 1)}  # type: ignore[misc]

    # ---- recording --------------------------------------------------------------------------

    def probe(self, n: int) -> SampleProbe | None:
        """For the next dense forward of `n` rows (FUSED_MIN values or more, on the C kernels):
        a probe the statistics pass fills where it can (float32 / bfloat16 features; see
        `stats/sample_probe.py`), or None."""
        if (self.per_feature == 0 or n * self.d_sae < FUSED_MIN
                or self.backend.sample(self.device) is None):
            return None
        # Past the first forwards, per_feature candidates a feature or fewer; over the room,
        # the sample's own pass folds the forward (as exact, one more read).
        return SampleProbe.new(token_keys(self.seed, process_rank(), self.rows_seen, n,
                                          self.device), self.key,
                               2 * self.d_sae * self.per_feature + 4096)

    def update_sample(self, features: DenseFeatures | SparseFeatures, valid: Tensor,
                      positions: Tensor, batch: int, tokens: int, threshold: float,
                      context: tuple[Tensor, Tensor, Tensor], code: int,
                      probe: SampleProbe | None = None) -> None:
        """Fold one forward (features [batch * tokens, ...], `valid`, `positions` [batch *
        tokens], the window `context` of `ExampleTable.context`, `probe()`) in."""
        n = batch * tokens
        first, self.rows_seen = self.rows_seen, self.rows_seen + n
        if self.per_feature == 0:
            return
        token_key = probe.token_key if probe else token_keys(self.seed, process_rank(), first, n,
                                                             self.device)
        t = floor_in(torch.float32, threshold)  # v > t in float32 exactly when v > threshold
        context_ids, source, rank = context
        native = self.backend.sample(self.device)
        if native is not None:
            if isinstance(features, DenseFeatures):
                acts, indices = features.acts, None
                if acts.dtype not in (torch.float32, torch.bfloat16):
                    acts = acts.to(torch.float32)
            else:
                acts = features.values.to(torch.float32).contiguous()
                indices = features.indices.to(torch.int64).contiguous()
            native.sample(acts.contiguous(), indices, valid.contiguous(), token_key, t, tokens,
                          positions.contiguous(), rank, context_ids, source, code, self.key,
                          self.value, self.request, self.row, self.position, self.tokens,
                          self.acts, probe)
            return
        if isinstance(features, SparseFeatures):
            self._merge_sparse(features, valid, token_key, t, batch, tokens, positions,
                               context, code)
            return
        chunk = max(1, _CHUNK_ELEMENTS // max(1, tokens * self.d_sae))
        feature = torch.arange(self.d_sae, device=self.device)
        for b0 in range(0, batch, chunk):
            b1 = min(batch, b0 + chunk)
            span = slice(b0 * tokens, b1 * tokens)
            x = features.acts[span].to(torch.float32)
            active = valid[span, None] & ((x - x) == 0) & (x > t)
            keys = torch.where(active, feature_keys(token_key[span, None], feature), EMPTY_KEY)
            new_key, new_token = keys.topk(min(self.per_feature, keys.shape[0]), dim=0,
                                           largest=False)
            new_value = x.gather(0, new_token)
            self._take(new_key.t(), new_token.t(), new_value.t(), b0, b1 - b0, tokens,
                       positions, context, features, code)

    def _merge_sparse(self, features: SparseFeatures, valid: Tensor, token_key: Tensor,
                      t: float, batch: int, tokens: int, positions: Tensor,
                      context: tuple[Tensor, Tensor, Tensor], code: int) -> None:
        """The torch merge of a TopK forward: per feature its `per_feature` smallest keys among
        the listed (token, feature) pairs (two stable sorts, no host read), then `_take`."""
        f, e, dev = self.d_sae, self.per_feature, self.device
        index = features.indices
        n, k = index.shape
        x = features.values.to(torch.float32)
        good = (valid[:, None] & (index >= 0) & (index < f) & ((x - x) == 0) & (x > t))
        feature = torch.where(good, index, f).reshape(-1)  # f: none
        keys = torch.where(good, feature_keys(token_key[:, None], index.clamp(0, f - 1)),
                           EMPTY_KEY).reshape(-1)
        token = torch.arange(n, device=dev).repeat_interleave(k)
        order = keys.sort(stable=True).indices
        order = order.index_select(0, feature.index_select(0, order).sort(stable=True).indices)
        feature, keys, token = feature[order], keys[order], token[order]
        value = x.reshape(-1)[order]
        per = torch.zeros(f + 1, dtype=torch.int64, device=dev).scatter_add_(
            0, feature, torch.ones_like(feature))
        place = torch.arange(n * k, device=dev) - (per.cumsum(0) - per)[feature]
        slot = torch.where((place < e) & (feature < f), feature * e + place, f * e)
        new_key = torch.full((f * e + 1,), EMPTY_KEY, dtype=torch.int64, device=dev)
        new_token = torch.zeros(f * e + 1, dtype=torch.int64, device=dev)
        new_value = torch.full((f * e + 1,), float("-inf"), device=dev)
        for target, fresh in ((new_key, keys), (new_token, token), (new_value, value)):
            target.scatter_(0, slot, fresh)
        self._take(new_key[:-1].view(f, e), new_token[:-1].view(f, e),
                   new_value[:-1].view(f, e), 0, batch, tokens, positions, context, features,
                   code)

    def _take(self, new_key: Tensor, new_token: Tensor, new_value: Tensor, b0: int, rows: int,
              tokens: int, positions: Tensor, context: tuple[Tensor, Tensor, Tensor],
              features: DenseFeatures | SparseFeatures, code: int) -> None:
        """Merge candidates [F, C] (key ascending, EMPTY_KEY: none; token within rows b0..
        b0 + rows; value) into the kept slots: the E smallest keys of both."""
        e = self.per_feature
        keys, src = torch.cat([self.key, new_key], 1).topk(e, dim=1, largest=False)
        fresh = (src - e).clamp(0, new_key.shape[1] - 1)
        value = torch.where(src < e, self.value.gather(1, src.clamp_max(e - 1)),
                            new_value.gather(1, fresh))
        value = torch.where(keys != EMPTY_KEY, value, float("-inf"))
        context_ids, source, rank = context
        self.write_merged(src, new_token.gather(1, fresh), value, b0, rows, tokens, positions,
                          rank, context_ids, source, features, code)
        self.key.copy_(keys)

    # ---- reading ----------------------------------------------------------------------------

    def record_view(self, index: Tensor) -> dict[str, Tensor]:
        """The sample of the features `index`, here and (as of the last sync) on the other
        ranks: [len(index), E] per `_RECORD` field, on the device."""
        local = {n: getattr(self, n).index_select(0, index) for n in _RECORD}
        if self.remote is None:
            return local
        return union(local, {n: t.index_select(0, index) for n, t in self.remote.items()})

    def read(self, feature: int, k: int) -> ExampleRows:
        """Feature `feature`'s first `k` sampled tokens (by key), copied to the host."""
        view = self.record_view(torch.tensor([feature], device=self.device))
        return read_rows([view[n][0] for n in _RECORD[1:]], k)

    def request_name(self, code: int) -> str:
        """The request id of a record's request `code`."""
        return "(another rank)" if code == REMOTE_REQUEST else self.names.name(code)

    def resized(self, per_feature: int, window: int) -> SampleTable:  # type: ignore[override]
        """A table of `per_feature` slots and `window` tokens each side, keeping the smallest
        keys of this one that fit (windows cut or padded)."""
        new = SampleTable(self.d_sae, per_feature, window, self.seed, self.device, self.backend)
        new.names, new.rows_seen = self.names, self.rows_seen
        if per_feature == self.per_feature:  # a window change: keep the other ranks' too
            new.remote = self.remote
        keep = min(per_feature, self.per_feature)
        new.key[:, :keep] = self.key[:, :keep]
        for name in ("value", "request", "row", "position"):
            getattr(new, name)[:, :keep] = getattr(self, name)[:, :keep]
        cut_w = min(window, self.window)
        for name in ("tokens", "acts"):
            getattr(new, name)[:, :keep, window - cut_w: window + cut_w + 1] = \
                getattr(self, name)[:, :keep, self.window - cut_w: self.window + cut_w + 1]
        if new.remote is not None and window != self.window:
            new.remote = None
        return new

    # ---- StatePart --------------------------------------------------------------------------

    def fixed_tensors(self) -> dict[str, Tensor]:
        """The sample's live tensors (the keys and records)."""
        return {name: getattr(self, name) for name in _RECORD}

    def clear(self) -> None:
        """Forget every sampled token and the other ranks' (the counter restarts)."""
        super().clear()
        self.key.fill_(EMPTY_KEY)
        self.rows_seen, self.remote = 0, None

    def state_tensors(self) -> dict[str, Tensor]:
        """The keys and records, and the other ranks' as `remote_<field>` after a sync."""
        remote = {} if self.remote is None else {f"remote_{n}": t for n, t in self.remote.items()}
        return {**self.fixed_tensors(), **remote}

    def state_meta(self) -> dict[str, Any]:
        """The counter, the seed, and whether a remote view is held."""
        return {"rows": self.rows_seen, "seed": self.seed, "remote": self.remote is not None}

    def check_meta(self, meta: dict[str, Any]) -> None:
        """A counter in 0..MAX_COUNT, an int seed, a bool."""
        ok = (set(meta) == {"rows", "seed", "remote"}
              and all(isinstance(meta[k], int) and not isinstance(meta[k], bool)
                      for k in ("rows", "seed"))
              and 0 <= meta["rows"] <= MAX_COUNT and isinstance(meta["remote"], bool))
        if not ok:
            raise ValueError(f"expected {{'rows': int, 'seed': int, 'remote': bool}}, got "
                             f"{cut(repr(meta), 80)}")

    def expected_tensors(self, meta: dict[str, Any]) -> dict[str, Spec]:
        """The records as configured (and the remote view's, of the same shapes)."""
        fixed = {n: Spec(tuple(t.shape), t.dtype) for n, t in self.fixed_tensors().items()}
        remote = {f"remote_{n}": s for n, s in fixed.items()} if meta["remote"] else {}
        return {**fixed, **remote}

    def check_values(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Keys not negative, no NaN value, no negative row."""
        check_range(self.name, tensors, "key", 0)
        check_range(self.name, tensors, "value", nan=False)
        check_range(self.name, tensors, "row", 0)

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Copy a checked save in."""
        for name, target in self.fixed_tensors().items():
            target.copy_(tensors[name])
        self.rows_seen = meta["rows"]
        self.remote = None if not meta["remote"] else {
            n: tensors[f"remote_{n}"].to(self.device).clone() for n in _RECORD}

    def reset_on(self, event: Event) -> None:
        """A statistics reset or a threshold change empties the sample."""
        if event in (Event.STATISTICS, Event.THRESHOLD):
            self.clear()

    def sync_state(self) -> dict[str, Tensor]:
        """This rank's records packed (`pack_records`), their request codes replaced by
        `REMOTE_REQUEST` (request names are each rank's own)."""
        mine = {**self.fixed_tensors(), "request": torch.full_like(self.request, REMOTE_REQUEST)}
        return {"record": pack_records(mine).reshape(-1)}

    def take_remote(self, merged: dict[str, Tensor] | None) -> None:
        """The other ranks' union becomes the remote view."""
        self.remote = None if merged is None else {
            n: t.contiguous() for n, t in unpack_records(
                merged["record"].view(self.d_sae, self.per_feature, -1),
                2 * self.window + 1).items()}

    def memory_bytes(self) -> dict[str, int]:
        """The keys and records (and the remote view after a sync)."""
        held = list(self.fixed_tensors().values())
        if self.remote is not None:
            held += list(self.remote.values())
        return {"samples": nbytes(held)}
