"""Is the SAE still a faithful description of the model on this traffic: L0 (active features
per token), dead and ultra-rare features, and reconstruction quality, kept on the device.

Definitions (the README repeats them):

- L0 of a token: its features above the threshold. The mean is exact over every recorded token
  since the threshold was set (the sum of the features' active counts over those tokens); the
  histogram counts the tokens of sampled forwards.
- Dead: features never above the threshold since it was set (and the last reset).
  Ultra-rare: features that fired, on fewer than `rare_floor` of the tokens.
- Reconstruction, on sampled forwards of an SAE that can decode (`x` its input, `x_hat` the
  decode of its features, over the real tokens among the forward's first `HEALTH_TOKENS` token
  slots, flattened row by row: the decode is what costs, so it is bounded per sample):
  MSE = sum |x - x_hat|^2 / (tokens * d_in);
  FVU = sum |x - x_hat|^2 / sum |x - mean(x)|^2, the denominator the running variance of the
  SAE's input over the same tokens (per dimension, Chan's merge); cosine = mean over tokens of
  cos(x, x_hat).

A forward is sampled when its number since the reset (0, 1, ...) is a multiple of
`health_every` (0: never). Every sum is float64 on the device; nothing is read back on the hot
path.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ...checks import cut, is_int
from ...snapshot.frequency import NEVER_FIRED
from ...types import HealthResponse
from ..record.features import DenseFeatures, SparseFeatures
from ..record.registry import Event, Spec, StatePart, nbytes, spec_of

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
# Token slots of a sampled forward that are decoded for the reconstruction figures.
HEALTH_TOKENS = 256


class HealthTracker(StatePart):
    """The sampled health sums of one monitor (see module doc); callers hold its lock."""

    name = "health"

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

    def due(self, every: int) -> bool:
        """Whether this forward is sampled (counts it)."""
        sampled = every > 0 and self.forwards % every == 0
        self.forwards += 1
        self.sampled += int(sampled)
        return sampled

    def observe_l0(self, features: DenseFeatures | SparseFeatures, valid: Tensor,
                   threshold: float) -> None:
        """Count each real token's active features into the histogram."""
        if isinstance(features, DenseFeatures):
            l0 = (features.acts > threshold).sum(1)
        else:
            values = features.values.to(torch.float32)
            stored = (features.indices >= 0) & (features.indices < features.d_sae)
            l0 = ((values > threshold) & stored).sum(1)
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

    def summary_parts(self, firing: Tensor, active_tokens: Tensor) -> Tensor:
        """Everything `report_from` needs but the L0 histogram, as one float64 device tensor
        (nothing read back: copy it with the rest of a snapshot). `firing` is the snapshot's
        firing summary (`monitor/firing.py`), which holds the per-feature counts it needs."""
        # The four counts after the bins, in the layout's order (a slice: no index tensor).
        never_fired, never_seen, rare, active_sum = firing[NEVER_FIRED:].to(torch.float64).unbind()
        return torch.stack([
            active_sum, active_tokens.to(torch.float64),
            never_fired + never_seen,  # dead: never above the threshold, seen or not
            rare, self.recon_tokens, self.sse, self.cos_sum,
            self.x_m2.sum() if self.x_m2 is not None else self.sse.new_zeros(()),
        ])

    def report_from(self, parts: list[float], l0_counts: list[int], d_sae: int,
                    rare_floor: float, every: int) -> HealthResponse:
        """The `HealthResponse` from host copies of `summary_parts` and `l0_counts`."""
        active_sum, tokens, dead, rare, n, sse, cos_sum, variance = parts
        d_in = self.x_mean.shape[0] if self.x_mean is not None else 0
        bins = sum(1 for e in L0_EDGES if e <= d_sae)  # L0 is at most d_sae
        return HealthResponse(
            tokens=int(tokens), l0_mean=active_sum / tokens if tokens else None,
            l0_edges=L0_EDGES[:bins], l0_counts=l0_counts[:bins],
            dead_features=int(dead), ultra_rare_features=int(rare), rare_floor=rare_floor,
            reconstruction_tokens=int(n), mse=sse / (n * d_in) if n and d_in else None,
            fvu=sse / variance if n and variance > 0 else None,
            cosine=cos_sum / n if n else None, sampled_forwards=self.sampled,
            health_every=every,
        )

    # ---- StatePart: saved, reset by a statistics reset and a threshold change, local to
    # each rank for now (no `sync_rules`) ---------------------------------------------------

    def state_tensors(self) -> dict[str, Tensor]:
        """The live sums (saving copies them, loading copies into them; the input's mean and
        M2 only once a reconstruction was seen, see `state_meta`)."""
        tensors = {"l0_counts": self.l0_counts, "recon_tokens": self.recon_tokens,
                   "sse": self.sse, "cos_sum": self.cos_sum}
        if self.x_mean is not None and self.x_m2 is not None:
            tensors.update(x_mean=self.x_mean, x_m2=self.x_m2)
        return tensors

    def state_meta(self) -> dict[str, int | None]:
        """The sampling counters, and the SAE input's width once seen."""
        return {"forwards": self.forwards, "sampled": self.sampled,
                "d_in": None if self.x_mean is None else int(self.x_mean.shape[0])}

    def check_meta(self, meta: dict[str, Any]) -> None:
        """Two counters and the input's width (None before the first reconstruction)."""
        d_in = meta.get("d_in")
        if not (set(meta) == {"forwards", "sampled", "d_in"}
                and all(is_int(meta[k]) and meta[k] >= 0 for k in ("forwards", "sampled"))
                and (d_in is None or (is_int(d_in) and d_in > 0))):
            raise ValueError(f"the save's 'health' entry is malformed ({cut(repr(meta), 80)}): "
                             f"the save is corrupt")

    def expected_tensors(self, meta: dict[str, Any]) -> dict[str, Spec]:
        """The sums, and the input's mean and M2 [d_in] once a reconstruction was seen."""
        sums = {name: spec_of(t) for name, t in self.state_tensors().items()
                if name not in ("x_mean", "x_m2")}
        d_in = meta["d_in"]
        inputs = {} if d_in is None else dict.fromkeys(("x_mean", "x_m2"),
                                                       Spec((d_in,), torch.float64))
        return {**sums, **inputs}

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Restore a checked save."""
        self.forwards, self.sampled = meta["forwards"], meta["sampled"]
        if meta["d_in"] is not None:
            self.x_mean = torch.zeros(meta["d_in"], dtype=torch.float64, device=self.device)
            self.x_m2 = torch.zeros_like(self.x_mean)
        super().load_state(tensors, meta)

    def reset_on(self, event: Event) -> None:
        """Sampled since the last reset and under the threshold in force."""
        if event in (Event.STATISTICS, Event.THRESHOLD):
            self.reset()

    @property
    def nbytes(self) -> int:
        """Device bytes held."""
        return nbytes(self.state_tensors().values())


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
