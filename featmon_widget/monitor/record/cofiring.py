"""Exact co-firing counts of the selected features against every feature, on the device.

For each selected feature s (at most `MAX_SELECTED_FEATURES`), counted from the moment s was
selected (or the last reset / threshold change): `both[s, f]`, the tokens where s and f are
both above the threshold; `own[s, f]`, the tokens where f is, over the same tokens (so
`own[s, s]` is s's own count); and `tokens[s]`, the real (unpadded) tokens counted. A dense
forward adds `[sel | valid].T @ active` (float32 0/1 products: exact while a block has at most
2^24 rows), or on the CPU runs the C kernel (csrc/cofiring.c: one read of each row); a sparse
one scatters ones at the k indices of each token. Nothing is read back.

Counts are int32 (2 MB for 8 features at d_sae 65,536, twice that with `own`) and become int64,
exactly, before any could pass 2^31 - 1 (the rows fed are counted on the host: no sync).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..stats.backend import Backend
from .features import DenseFeatures, SparseFeatures
from .registry import SUM, Event, Rule, Spec, StatePart, nbytes

Tensor = torch.Tensor

# Rows per float32 product: every partial sum of 0/1 products stays an exact integer.
EXACT_ROWS = 1 << 24
# Elements of one temporary 0/1 block of the dense path (bounded memory at any d_sae).
BLOCK_ELEMENTS = 1 << 22
INT32_MAX = 2**31 - 1


def floor_in(dtype: torch.dtype, threshold: float) -> float:
    """The largest value of `dtype` at most `threshold`: for values x of `dtype`, x > it exactly
    when x > `threshold` (as float64 compares), so the comparison can run in `dtype`. Host
    arithmetic only (no tensor is made: nothing to sync)."""
    if not dtype.is_floating_point:
        return float(math.floor(threshold))
    if dtype == torch.float64:
        return threshold
    narrow = np.float16 if dtype == torch.float16 else np.float32
    with np.errstate(over="ignore"):  # beyond float16's range: inf, stepped down below
        value = narrow(threshold)
    if float(value) > threshold:
        value = np.nextafter(value, narrow(-np.inf))
    if dtype != torch.bfloat16:
        return float(value)
    # bfloat16 values are the float32 values with 16 low zero bits: round toward -inf.
    bits = int(np.float32(value).view(np.uint32))
    low, kept = bits & 0xFFFF, bits & 0xFFFF0000
    if low and bits >> 31 and kept & 0x7FFFFFFF != 0x7F800000:
        kept += 1 << 16
    return float(np.uint32(kept).view(np.float32))


def _same(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
    if not torch.equal(a["features"], b["features"]):
        raise ValueError(f"sync needs the same selected features on every rank; this rank "
                         f"selects {a['features'].tolist()}, another {b['features'].tolist()}")
    return a


# The ranks' selections must agree (checked as it travels); the counts add up.
SAME = Rule("same selection", lambda like: {n: t.clone() for n, t in like.items()}, _same)


class CoFiring(StatePart):
    """The co-firing counts of the selected features (see module doc)."""

    name = "cofiring"
    since_format = 3
    sync_rules = {"features": SAME, "both": SUM, "own": SUM, "tokens": SUM}

    def __init__(self, features: tuple[int, ...], d_sae: int, device: torch.device,
                 backend: Backend | None = None) -> None:
        self.features = features
        self.backend = backend  # where it runs the C kernel (the CPU): the dense path
        self.d_sae = d_sae
        self.device = torch.device(device)
        s = len(features)
        self.both = torch.zeros(s, d_sae, dtype=torch.int32, device=self.device)
        self.own = torch.zeros(s, d_sae, dtype=torch.int32, device=self.device)
        self.tokens = torch.zeros(s, dtype=torch.int64, device=self.device)
        self.bound = 0  # rows fed since the oldest count started: what a count can reach
        self.remote: dict[str, Tensor] | None = None  # the other ranks' at the last sync
        self._index = torch.tensor(features, dtype=torch.int64, device=self.device)
        self._floors: dict[tuple[torch.dtype, float], float] = {}

    def reselected(self, features: tuple[int, ...]) -> CoFiring:
        """Counts for a new selection: features still selected keep theirs (and the other
        ranks'), new ones start at zero."""
        new = CoFiring(features, self.d_sae, self.device, self.backend)
        new.bound = self.bound
        new.both, new.own = new.both.to(self.both.dtype), new.own.to(self.own.dtype)
        keep = [(j, self.features.index(f)) for j, f in enumerate(features) if f in self.features]
        if self.remote is not None:
            new.remote = {n: t.new_zeros(len(features), *t.shape[1:])
                          for n, t in self.remote.items() if n != "features"}
        for j, old in keep:
            for name in ("both", "own", "tokens"):
                getattr(new, name)[j] = getattr(self, name)[old]
                if new.remote is not None:
                    new.remote[name][j] = self.remote[name][old]  # type: ignore[index]
        return new

    # ---- recording --------------------------------------------------------------------------

    def update(self, features: DenseFeatures | SparseFeatures, valid: Tensor,
               threshold: float) -> None:
        """Count one forward's rows where `valid` is true."""
        if not self.features:
            return
        self._widen(features.n)
        if isinstance(features, SparseFeatures):
            self._update_sparse(features, valid, threshold)
        else:
            self._update_dense(features.acts, valid, threshold)
        self.tokens += valid.sum()

    def _floor(self, dtype: torch.dtype, threshold: float) -> float:
        key = (dtype, threshold)
        if key not in self._floors:
            self._floors[key] = floor_in(dtype, threshold)
        return self._floors[key]

    def _widen(self, rows: int) -> None:
        """Make the counts int64 before `rows` more could overflow int32 (exactly)."""
        self.bound += rows
        if self.bound > INT32_MAX and self.both.dtype != torch.int64:
            self.both, self.own = self.both.to(torch.int64), self.own.to(torch.int64)

    def _update_dense(self, acts: Tensor, valid: Tensor, threshold: float) -> None:
        t = self._floor(acts.dtype, threshold)
        native = None if self.backend is None else self.backend.cofiring(acts, len(self.features))
        if native is not None:
            own = torch.zeros(self.d_sae, dtype=torch.int32)
            native(acts.contiguous(), valid.contiguous(), self._index, self.features, t,
                   self.both, own)
            self.own += own.to(self.own.dtype)
            return
        # [N, S + 1]: which rows each selected feature fires on, then every real row.
        left = torch.cat([(acts.index_select(1, self._index) > t) & valid[:, None],
                          valid[:, None]], 1).to(torch.float32)
        n, d = acts.shape
        rows = min(n, EXACT_ROWS)
        cols = max(1, min(d, BLOCK_ELEMENTS // max(1, rows)))
        for r in range(0, n, rows):
            lhs = left[r:r + rows].T
            for c in range(0, d, cols):
                block = acts[r:r + rows, c:c + cols] > t
                sums = (lhs @ block.to(torch.float32)).to(self.both.dtype)
                self.both[:, c:c + cols] += sums[:-1]
                self.own[:, c:c + cols] += sums[-1:]

    def _update_sparse(self, features: SparseFeatures, valid: Tensor, threshold: float) -> None:
        idx, values = features.indices, features.values
        t = self._floor(values.dtype, threshold)
        active = (values > t) & (idx >= 0) & (idx < self.d_sae) & valid[:, None]  # [N, k]
        safe = torch.where(active, idx, 0)
        fires = ((idx[:, :, None] == self._index) & active[:, :, None]).any(1)  # [N, S]
        s = len(self.features)
        offsets = torch.arange(s, device=self.device) * self.d_sae  # [S]
        flat = (safe[:, :, None] + offsets).reshape(-1)  # [N * k * S]
        both = (active[:, :, None] & fires[:, None, :]).reshape(-1)
        own = active[:, :, None].expand(-1, -1, s).reshape(-1)
        self.both.view(-1).scatter_add_(0, flat, both.to(self.both.dtype))
        self.own.view(-1).scatter_add_(0, flat, own.to(self.own.dtype))

    # ---- reading ----------------------------------------------------------------------------

    def totals(self, j: int) -> tuple[Tensor, Tensor, Tensor]:
        """Selected feature j's (both [d_sae], own [d_sae], tokens) int64, here plus the other
        ranks' as of the last sync (device tensors)."""
        both, own, tokens = (getattr(self, n)[j].to(torch.int64)
                             for n in ("both", "own", "tokens"))
        if self.remote is not None:
            both, own = both + self.remote["both"][j], own + self.remote["own"][j]
            tokens = tokens + self.remote["tokens"][j]
        return both, own, tokens

    # ---- StatePart --------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, Tensor]:
        """The counts (int32 or int64) and tokens per selected feature, and the other ranks'
        (int64) as of the last sync, if any."""
        remote = {} if self.remote is None else {f"remote_{n}": t for n, t in self.remote.items()}
        return {"both": self.both, "own": self.own, "tokens": self.tokens, **remote}

    def state_meta(self) -> dict[str, Any]:
        """The row bound (whether the counts are int64) and whether a remote view is held."""
        return {"bound": self.bound, "remote": self.remote is not None}

    def check_meta(self, meta: dict[str, Any]) -> None:
        """A non-negative int bound and a bool ({}: a save from before co-firing counts, which
        start at zero)."""
        if not meta:
            return
        bound = meta.get("bound")
        if set(meta) != {"bound", "remote"} or not isinstance(bound, int) \
                or isinstance(bound, bool) or bound < 0 or not isinstance(meta["remote"], bool):
            raise ValueError(f"expected {{'bound': int >= 0, 'remote': bool}}, got "
                             f"{str(meta)[:80]}")

    def expected_tensors(self, meta: dict[str, Any]) -> dict[str, Spec]:
        """Counts of the saved width: int64 once the bound passed int32."""
        if not meta:
            return {}
        wide = torch.int64 if meta["bound"] > INT32_MAX else torch.int32
        s = (len(self.features), self.d_sae)
        specs = {"both": Spec(s, wide), "own": Spec(s, wide),
                 "tokens": Spec((len(self.features),), torch.int64)}
        if meta["remote"]:
            specs.update({f"remote_{n}": Spec(spec.shape, torch.int64)
                          for n, spec in list(specs.items())})
        return specs

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Take the saved counts (at their width) and remote view."""
        if not meta:
            self.reset_on(Event.STATISTICS)
            return
        self.bound = meta["bound"]
        taken = {n: t.to(self.device).clone() for n, t in tensors.items()}
        self.both, self.own, self.tokens = taken["both"], taken["own"], taken["tokens"]
        self.remote = None if not meta["remote"] else {
            n: taken[f"remote_{n}"] for n in ("both", "own", "tokens")}

    def reset_on(self, event: Event) -> None:
        """A statistics reset or threshold change starts every count again (the other ranks'
        too)."""
        if event in (Event.STATISTICS, Event.THRESHOLD):
            self.both.zero_()
            self.own.zero_()
            self.tokens.zero_()
            self.bound, self.remote = 0, None

    def sync_state(self) -> dict[str, Tensor]:
        """The selection and this rank's counts (int64, whatever the local width)."""
        return {"features": self._index, "both": self.both.to(torch.int64),
                "own": self.own.to(torch.int64), "tokens": self.tokens}

    def take_remote(self, merged: dict[str, Tensor] | None) -> None:
        """The other ranks' summed counts become the remote view."""
        self.remote = None if merged is None else {
            n: merged[n] for n in ("both", "own", "tokens")}

    def memory_bytes(self) -> dict[str, int]:
        """The counts (and the remote view's, after a sync)."""
        held = [self.both, self.own, self.tokens]
        if self.remote is not None:
            held += list(self.remote.values())
        return {"cofiring": nbytes(held)}
