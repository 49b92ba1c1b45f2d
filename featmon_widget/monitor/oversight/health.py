"""Is the SAE still a faithful description of the model on this traffic: L0 (active features
per token), dead and ultra-rare features, and reconstruction quality, kept on the device.

Definitions (the README repeats them):

- L0 of a token: its finite features above the threshold (active as the statistics count it).
  The mean is exact over every recorded token since the threshold was set (the sum of the
  features' active counts over those tokens); the histogram counts sampled forwards' tokens.
- Dead: features never above the threshold since it was set (and the last reset).
  Ultra-rare: features that fired, on fewer than `rare_floor` of the tokens.
- Reconstruction, on sampled forwards of an SAE that can decode (`x` its input, `x_hat` the
  decode of its features, over the real tokens among every ceil(slots / `HEALTH_TOKENS`)-th
  token slot, flattened row by row: the decode is what costs, so it is bounded per sample):
  MSE = sum |x - x_hat|^2 / (tokens * d_in); FVU = sum |x - x_hat|^2 / sum |x - mean(x)|^2,
  the denominator the running variance of the SAE's input over the same tokens (per
  dimension, Chan's merge); cosine = mean over tokens of cos(x, x_hat).

A forward is sampled when its number since the reset (0, 1, ...) is a multiple of
`health_every` (0: never). Every sum is float64 on the device; nothing is read back on the hot
path.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from ...checks import cut, is_int
from ...snapshot.frequency import NEVER_FIRED
from ...types import HealthResponse
from ..record.features import DenseFeatures, SparseFeatures
from ..record.registry import (
    MAX_COUNT,
    SUM,
    Event,
    Spec,
    StatePart,
    check_range,
    nbytes,
    pooled_moments,
    spec_of,
)

Tensor = torch.Tensor


def l0_edges(limit: int = 1 << 25) -> list[int]:
    """Bin edges of the L0 histogram: 0, 1, 2, 3, then 4, 6, 8, 12, 16, 24, ... (two bins per
    octave) up to past `limit`."""
    edges = [0, 1, 2, 3]
    power = 4
    while edges[-1] <= limit:
        edges += [power, power * 3 // 2]
        power *= 2
    return edges


L0_EDGES = l0_edges()
# Token slots of a sampled forward decoded, at most (256 of 1,024 every 8th: 3 % of a forward).
HEALTH_TOKENS = 64
# Rows counted at once for the L0 histogram on the CPU (see `_active_per_row`).
L0_ROWS = 64
# The widest SAE input a save may name, and the bound of a finite sum.
MAX_D_IN = 2**31 - 1
_FLOAT_MAX = sys.float_info.max
# The saved names of the other ranks' sums (`HealthSums` fields but `sampled`).
_REMOTE = ("l0_counts", "recon_tokens", "sse", "cos_sum", "x_mean", "x_m2")


class HealthSums(NamedTuple):
    """The health sums of some forwards: this rank's, the other ranks' at the last sync, or
    both (`HealthTracker.seen`). `x_mean` / `x_m2` are None before any reconstruction."""

    l0_counts: Tensor  # int64 [len(L0_EDGES)]
    recon_tokens: Tensor  # float64 scalar
    sse: Tensor  # float64 scalar
    cos_sum: Tensor  # float64 scalar
    x_mean: Tensor | None  # float64 [d_in]
    x_m2: Tensor | None
    sampled: int  # sampled forwards


_POOLED = pooled_moments("recon_tokens", "x_mean", "x_m2")


def combine_sums(a: HealthSums, b: HealthSums) -> HealthSums:
    """The sums of `a`'s forwards and `b`'s together."""
    recon_tokens, x_mean, x_m2 = _pooled_input(a, b)
    return HealthSums(a.l0_counts + b.l0_counts, recon_tokens, a.sse + b.sse,
                      a.cos_sum + b.cos_sum, x_mean, x_m2, a.sampled + b.sampled)


def _pooled_input(a: HealthSums, b: HealthSums) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Reconstruction tokens and the input's mean and M2 of `a` and `b` (Chan's formula); of
    inputs of another width only `b`'s, as a width change starts the moments again."""
    if a.x_mean is None or (b.x_mean is not None and b.x_mean.shape != a.x_mean.shape):
        return b.recon_tokens, b.x_mean, b.x_m2
    if b.x_mean is None:
        return a.recon_tokens, a.x_mean, a.x_m2
    pooled = _POOLED.combine(*({"recon_tokens": s.recon_tokens.expand_as(s.x_mean),
                                "x_mean": s.x_mean, "x_m2": s.x_m2} for s in (a, b)))
    return pooled["recon_tokens"][0], pooled["x_mean"], pooled["x_m2"]


class HealthTracker(StatePart):
    """The sampled health sums of one monitor (see module doc); callers hold its lock. After a
    sync, `remote` holds the other ranks' sums and readers see `seen()`: both together."""

    name = "health"
    sync_rules = {**dict.fromkeys(("l0_counts", "sse", "cos_sum", "sampled"), SUM),
                  **dict.fromkeys(("recon_tokens", "x_mean", "x_m2"), _POOLED)}

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self._edges = torch.tensor(L0_EDGES[1:], dtype=torch.int64, device=self.device)
        self.reset()

    def reset(self) -> None:
        """Forget every sample."""
        dev = self.device
        self.forwards = 0  # forwards offered since the reset (host-side: the sampling rule)
        self.sampled = 0
        self.l0_counts = torch.zeros(len(L0_EDGES), dtype=torch.int64, device=dev)
        self.recon_tokens = torch.zeros((), dtype=torch.float64, device=dev)
        self.sse = torch.zeros((), dtype=torch.float64, device=dev)
        self.cos_sum = torch.zeros((), dtype=torch.float64, device=dev)
        self.x_mean: Tensor | None = None  # [d_in], made on the first reconstruction
        self.x_m2: Tensor | None = None
        self.remote: HealthSums | None = None  # the other ranks' at the last sync

    def is_due(self, every: int) -> bool:
        """Whether the next forward will be sampled (counts nothing)."""
        return every > 0 and self.forwards % every == 0

    def due(self, every: int) -> bool:
        """Whether this forward is sampled (counts it)."""
        sampled = self.is_due(every)
        self.forwards += 1
        self.sampled += int(sampled)
        return sampled

    def observe_l0(self, features: DenseFeatures | SparseFeatures, valid: Tensor,
                   threshold: float, counted: Tensor | None = None) -> None:
        """Count each real token's active features (`counted` per row, if the statistics
        pass gave them: `StatisticsRider.l0`) into the histogram."""
        if counted is not None:
            l0 = counted.to(torch.int64)
        elif isinstance(features, DenseFeatures):
            l0 = _active_per_row(features.acts, threshold)
        else:
            values = features.values.to(torch.float32)
            stored = (features.indices >= 0) & (features.indices < features.d_sae)
            l0 = ((values > threshold) & (values < torch.inf) & stored).sum(1)
            if threshold < 0:  # the implicit zeros are above it too
                l0 = l0 + (features.d_sae - stored.sum(1))
        bins = torch.bucketize(l0, self._edges, right=True)
        self.l0_counts.scatter_add_(0, bins, valid.to(torch.int64))

    def observe_reconstruction(self, x: Tensor, x_hat: Tensor, valid: Tensor) -> None:
        """Fold one sampled forward's input `x` and reconstruction `x_hat` [N, d_in] (real
        tokens where `valid`) into the sums."""
        x, x_hat = x.to(torch.float64), x_hat.to(torch.float64)
        if self.x_mean is None or self.x_mean.shape[0] != x.shape[1]:
            self.x_mean = torch.zeros(x.shape[1], dtype=torch.float64, device=self.device)
            self.x_m2 = torch.zeros_like(self.x_mean)
            for total in (self.recon_tokens, self.sse, self.cos_sum):
                total.zero_()
        w = valid.to(torch.float64)
        self.sse += ((x - x_hat).square().sum(1) * w).sum()
        self.cos_sum += (F.cosine_similarity(x, x_hat, dim=1, eps=1e-12) * w).sum()
        n_b = w.sum()
        mean_b = (x * w[:, None]).sum(0) / n_b.clamp_min(1.0)
        m2_b = ((x - mean_b).square() * w[:, None]).sum(0)
        n_a = self.recon_tokens
        n = n_a + n_b
        delta = mean_b - self.x_mean
        ratio = n_b / n.clamp_min(1.0)
        assert self.x_m2 is not None
        self.x_mean += delta * ratio
        self.x_m2 += m2_b + delta.square() * n_a * ratio
        self.recon_tokens.copy_(n)

    def local(self) -> HealthSums:
        """This rank's own sums."""
        return HealthSums(self.l0_counts, self.recon_tokens, self.sse, self.cos_sum,
                          self.x_mean, self.x_m2, self.sampled)

    def seen(self) -> HealthSums:
        """What readers see: this rank's sums, with the other ranks' as of the last sync."""
        local = self.local()
        return local if self.remote is None else combine_sums(self.remote, local)

    @staticmethod
    def summary_parts(firing: Tensor, active_tokens: Tensor, sums: HealthSums) -> Tensor:
        """Everything `report_from` needs but the L0 histogram and the host counters, as one
        float64 device tensor (nothing read back: copy it with the rest of a snapshot), from
        `sums` (what readers see: `seen()`). `firing` is the snapshot's firing summary
        (`monitor/firing.py`), which holds the per-feature counts it needs; `active_tokens`
        what they are out of (`Recording.seen_active_tokens`)."""
        # The four counts after the bins, in the layout's order (a slice: no index tensor).
        never_fired, never_seen, rare, active_sum = firing[NEVER_FIRED:].to(torch.float64).unbind()
        return torch.stack([
            active_sum, active_tokens.to(torch.float64),
            never_fired + never_seen,  # dead: never above the threshold, seen or not
            rare, sums.recon_tokens, sums.sse, sums.cos_sum,
            sums.x_m2.sum() if sums.x_m2 is not None else sums.sse.new_zeros(()),
        ])

    @staticmethod
    def report_from(parts: list[float], l0_counts: list[int], sums: HealthSums, d_sae: int,
                    rare_floor: float, every: int) -> HealthResponse:
        """The `HealthResponse` from host copies of `summary_parts` and `sums.l0_counts`
        (`sums` gives the input's width and the sampled forwards)."""
        active_sum, tokens, dead, rare, n, sse, cos_sum, variance = parts
        d_in = sums.x_mean.shape[0] if sums.x_mean is not None else 0
        bins = sum(1 for e in L0_EDGES if e <= d_sae)  # L0 is at most d_sae
        return HealthResponse(
            tokens=int(tokens), l0_mean=active_sum / tokens if tokens else None,
            l0_edges=L0_EDGES[:bins], l0_counts=l0_counts[:bins],
            dead_features=int(dead), ultra_rare_features=int(rare), rare_floor=rare_floor,
            reconstruction_tokens=int(n), mse=sse / (n * d_in) if n and d_in else None,
            fvu=sse / variance if n and variance > 0 else None,
            cosine=cos_sum / n if n else None, sampled_forwards=sums.sampled,
            health_every=every,
        )

    # ---- StatePart: saved (the other ranks' sums too, as `remote.<name>`), reset by a
    # statistics reset and a threshold change, synced (`sync_rules`) -----------------------

    def state_tensors(self) -> dict[str, Tensor]:
        """The live sums (saving copies them, loading copies into them; the input's mean and
        M2 only once a reconstruction was seen, see `state_meta`), and the other ranks'."""
        tensors = {"l0_counts": self.l0_counts, "recon_tokens": self.recon_tokens,
                   "sse": self.sse, "cos_sum": self.cos_sum}
        if self.x_mean is not None and self.x_m2 is not None:
            tensors.update(x_mean=self.x_mean, x_m2=self.x_m2)
        return {**tensors, **self._remote_tensors()}

    def state_meta(self) -> dict[str, Any]:
        """The sampling counters, and the SAE input's width once seen; after a sync, the other
        ranks' sampled forwards and input width (`remote`, absent before any sync)."""
        meta: dict[str, Any] = {"forwards": self.forwards, "sampled": self.sampled,
                                "d_in": None if self.x_mean is None else int(self.x_mean.shape[0])}
        if self.remote is not None:
            d_in = self.remote.x_mean
            meta["remote"] = {"sampled": self.remote.sampled,
                              "d_in": None if d_in is None else int(d_in.shape[0])}
        return meta

    def check_meta(self, meta: dict[str, Any]) -> None:
        """Two counters and the input's width (None before the first reconstruction)."""
        d_in = meta.get("d_in")
        if not (set(meta) - {"remote"} == {"forwards", "sampled", "d_in"}
                and all(is_int(meta[k]) and 0 <= meta[k] <= MAX_COUNT
                        for k in ("forwards", "sampled"))
                and (d_in is None or (is_int(d_in) and 0 < d_in <= MAX_D_IN))
                and _remote_meta_ok(meta.get("remote"))):
            raise ValueError(f"the save's 'health' entry is malformed ({cut(repr(meta), 80)}): "
                             f"the save is corrupt")

    def expected_tensors(self, meta: dict[str, Any]) -> dict[str, Spec]:
        """The sums, and the input's mean and M2 [d_in] once a reconstruction was seen (the
        other ranks' too, when `meta` holds them)."""
        sums = {name: spec_of(getattr(self, name)) for name in ("l0_counts", "recon_tokens",
                                                                  "sse", "cos_sum")}
        d_in = meta["d_in"]
        inputs = {} if d_in is None else dict.fromkeys(("x_mean", "x_m2"),
                                                       Spec((d_in,), torch.float64))
        remote = meta.get("remote")
        if remote is None:
            return {**sums, **inputs}
        theirs = {f"remote.{n}": spec for n, spec in sums.items()}
        if remote["d_in"] is not None:
            theirs.update(dict.fromkeys(("remote.x_mean", "remote.x_m2"),
                                        Spec((remote["d_in"],), torch.float64)))
        return {**sums, **inputs, **theirs}

    def check_values(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Every sum finite (the figures divide them), counts in 0..`MAX_COUNT`, sums of
        squares not negative."""
        for name in tensors:
            counts = name.endswith(("l0_counts", "recon_tokens"))
            low = 0 if counts or name.endswith(("sse", "x_m2")) else -_FLOAT_MAX
            check_range(self.name, tensors, name, low, MAX_COUNT if counts else _FLOAT_MAX,
                        nan=False)

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Restore a checked save."""
        self.forwards, self.sampled = meta["forwards"], meta["sampled"]
        if meta["d_in"] is not None:
            self.x_mean = torch.zeros(meta["d_in"], dtype=torch.float64, device=self.device)
            self.x_m2 = torch.zeros_like(self.x_mean)
        self.remote = None
        super().load_state(tensors, meta)
        remote = meta.get("remote")
        if remote is not None:
            def held(name: str) -> Tensor | None:
                saved = tensors.get(f"remote.{name}")
                return None if saved is None else saved.to(self.device, copy=True)

            self.remote = HealthSums(*(held(n) for n in _REMOTE), sampled=remote["sampled"])

    def reset_on(self, event: Event) -> None:
        """Sampled since the last reset and under the threshold in force (the other ranks'
        view goes with it)."""
        if event in (Event.STATISTICS, Event.THRESHOLD):
            self.reset()

    def sync_state(self) -> dict[str, Tensor]:
        """This rank's sums; before its first reconstruction the input's moments empty (the
        other ranks' width decides), the reconstruction tokens given per input dimension."""
        empty = torch.zeros(0, dtype=torch.float64, device=self.device)
        x_mean = empty if self.x_mean is None else self.x_mean
        x_m2 = empty if self.x_m2 is None else self.x_m2
        return {"l0_counts": self.l0_counts, "sse": self.sse, "cos_sum": self.cos_sum,
                "sampled": torch.tensor(self.sampled, dtype=torch.int64, device=self.device),
                "recon_tokens": self.recon_tokens.expand_as(x_mean), "x_mean": x_mean,
                "x_m2": x_m2}

    def take_remote(self, merged: dict[str, Tensor] | None) -> None:
        """The others' sums, merged, become `remote`."""
        if merged is None:
            self.remote = None
            return
        seen = merged["x_mean"].numel() > 0
        self.remote = HealthSums(
            merged["l0_counts"], merged["recon_tokens"][:1].sum(), merged["sse"],
            merged["cos_sum"], merged["x_mean"] if seen else None,
            merged["x_m2"] if seen else None, int(merged["sampled"]))

    def _remote_tensors(self) -> dict[str, Tensor]:
        remote = self.remote
        if remote is None:
            return {}
        return {f"remote.{n}": t for n, t in zip(_REMOTE, remote, strict=False) if t is not None}

    @property
    def nbytes(self) -> int:
        """Device bytes held."""
        return nbytes(self.state_tensors().values())


def _remote_meta_ok(remote: Any) -> bool:
    """Whether a saved `remote` entry is None or the other ranks' counter and width."""
    if remote is None:
        return True
    return (isinstance(remote, dict) and set(remote) == {"sampled", "d_in"}
            and is_int(remote["sampled"]) and 0 <= remote["sampled"] <= MAX_COUNT
            and (remote["d_in"] is None or (is_int(remote["d_in"])
                                            and 0 < remote["d_in"] <= MAX_D_IN)))


def _active_per_row(acts: Tensor, threshold: float) -> Tensor:
    """Finite values above `threshold` in each row of `acts` [N, d_sae], int64 [N] (where the
    statistics pass does not count them). On the CPU in blocks of `L0_ROWS` rows: a block's
    comparison and sum stay in cache (a whole tensor's: several reads of memory traffic)."""
    def active(x: Tensor) -> Tensor:  # NaN is above nothing; +inf is not finite
        return (x > threshold) & (x < torch.inf)
    if acts.device.type != "cpu" or acts.shape[0] <= L0_ROWS:
        return active(acts).sum(1)
    blocks = [active(acts[i:i + L0_ROWS]).sum(1, dtype=torch.int32)
              for i in range(0, acts.shape[0], L0_ROWS)]
    return torch.cat(blocks).to(torch.int64)


def reconstruct(sae: Any, features: DenseFeatures | SparseFeatures) -> Tensor | None:
    """The SAE's reconstruction [N, d_in] of `features`, or None when it cannot give one that
    is comparable with its input (no `decode`; a transcoder, whose decoder predicts another
    module's output)."""
    cfg = getattr(sae, "cfg", None)
    metadata = cfg.get("metadata") if isinstance(cfg, dict) else None
    if isinstance(metadata, dict) and metadata.get("reconstructs_input") is False:
        return None
    if isinstance(features, SparseFeatures):
        return _decode_sparse(sae, features)
    decode = getattr(sae, "decode", None)
    if not callable(decode):
        return None
    dtype = getattr(sae, "dtype", None)
    acts = features.acts if not isinstance(dtype, torch.dtype) else features.acts.to(dtype)
    out = decode(acts)
    return out.reshape(acts.shape[0], -1) if isinstance(out, Tensor) else None


def _decode_sparse(sae: Any, features: SparseFeatures) -> Tensor | None:
    """`decode` of TopK features without densifying: our SAE's `f @ W_dec + b_dec` as one
    embedding-bag sum over the k stored features."""
    w_dec, b_dec = getattr(sae, "W_dec", None), getattr(sae, "b_dec", None)
    if not isinstance(w_dec, Tensor) or not isinstance(b_dec, Tensor):
        return None
    stored = (features.indices >= 0) & (features.indices < w_dec.shape[0])
    index = torch.where(stored, features.indices, 0)
    values = torch.where(stored, features.values.to(w_dec.dtype), 0.0)
    if getattr(sae, "rescale_acts_by_decoder_norm", False):
        values = values / w_dec.norm(dim=1).index_select(0, index.reshape(-1)).view_as(values)
    out = F.embedding_bag(index, w_dec, per_sample_weights=values, mode="sum")
    return out + b_dec
