"""Has the traffic moved: each feature's firing frequency now against a reference.

A reference is a saved monitor (its folder), another live monitor, or a SAELens
`sparsity.safetensors` (log10 feature density). Per feature, with k of n live tokens active:

- density = k / n; log-ratio = log10((k + 0.5) / (n + 1)) - log10(reference density), the
  reference's density smoothed the same way when it has counts (k_r of n_r), and floored at
  1e-10 (SAELens' epsilon) when it is only a density.
- z: with reference counts, the two-proportion z-test with the pooled proportion
  p = (k + k_r) / (n + n_r): z = (k/n - k_r/n_r) / sqrt(p (1 - p) (1/n + 1/n_r)); with a density
  p_r only, the one-sample binomial z against it: z = (k - n p_r) / sqrt(n p_r (1 - p_r)).
  0 where the variance is 0 (nothing fired anywhere, or p_r is 0 or 1).
- summary: the Jensen-Shannon divergence (base 2, 0..1) between the two distributions of firing
  over features (each feature's share of all activations).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ...types import DriftFeature, DriftResponse
from ..io.exports import read_sparsity
from ..io.saving import JSON_FILE, SavedMonitor, read_save
from ..query.ranking import top_k_stable
from ..stats.backend import Backend

Tensor = torch.Tensor

DIRECTIONS = ("hot", "cold")
_EPS = 1e-10


class Reference(NamedTuple):
    """What live traffic is compared with: per-feature active counts over `tokens` tokens, or
    only a density (then `active` is None)."""

    density: Tensor  # float64 [d_sae], on the host
    active: Tensor | None  # float64 [d_sae]
    tokens: float | None
    source: str


def reference_from(source: Any, d_sae: int) -> Reference:
    """A `Reference` from a live monitor (anything with `reference_counts()`), a saved
    monitor's folder, or a SAELens sparsity file (or a folder holding one)."""
    counts = getattr(source, "reference_counts", None)
    if callable(counts):
        active, tokens = counts()
        return _from_counts(active, tokens, d_sae, f"live monitor {id(source):#x}")
    if not isinstance(source, (str, Path)):
        raise TypeError(f"a reference is a FeatureMonitor, a saved monitor's folder or a "
                        f"sparsity.safetensors path, got {type(source).__name__}")
    path = Path(source)
    if (path / JSON_FILE).is_file():
        active, tokens = _saved_counts(read_save(path))
        return _from_counts(active, tokens, d_sae, f"saved monitor {path}")
    density = 10.0 ** read_sparsity(path, d_sae).to(torch.float64) - _EPS
    return Reference(density.clamp(0.0, 1.0), None, None, f"sparsity {path}")


def _saved_counts(saved: SavedMonitor) -> tuple[Tensor, float]:
    """A save's active counts and the tokens they are out of, the other ranks' at its last
    sync included (as the saved monitor's own `reference_counts` gave them)."""
    active = saved.tensors["stats.active_count"].to(torch.float64)
    tokens = float(saved.tensors["totals.active_tokens"])
    theirs = saved.tensors.get("stats.remote.active_count")
    remote = saved.meta["parts"]["totals"]["remote"]
    if theirs is not None:
        active = active + theirs.to(torch.float64)
    if remote is not None:
        tokens += float(remote["active_tokens"])
    return active, tokens


def _from_counts(active: Tensor, tokens: float, d_sae: int, source: str) -> Reference:
    if active.shape != (d_sae,):
        raise ValueError(f"the reference has {tuple(active.shape)} features, this monitor "
                         f"{d_sae}")
    active = active.detach().to("cpu", torch.float64)
    return Reference(active / max(tokens, 1.0), active, float(tokens), source)


class PerFeature(NamedTuple):
    """Drift of every feature (float64 [d_sae] each, on the host)."""

    live_density: Tensor
    log_ratio: Tensor
    z: Tensor
    test: str


def per_feature(active: Tensor, tokens: float, ref: Reference) -> PerFeature:
    """Live density, log-ratio and z of every feature (see module doc)."""
    active = active.detach().to("cpu", torch.float64)
    n = max(tokens, 1.0)
    live_density = active / n
    live_smoothed = (active + 0.5) / (n + 1.0)
    if ref.active is not None and ref.tokens is not None:
        n_r = max(ref.tokens, 1.0)
        ref_smoothed = (ref.active + 0.5) / (n_r + 1.0)
        pooled = (active + ref.active) / (n + n_r)
        variance = pooled * (1 - pooled) * (1 / n + 1 / n_r)
        diff = live_density - ref.active / n_r
        test = "two-proportion z-test (pooled)"
    else:
        ref_smoothed = ref.density.clamp_min(_EPS)
        variance = ref.density * (1 - ref.density) / n
        diff = live_density - ref.density
        test = "one-sample binomial z (normal approximation)"
    z = torch.where(variance > 0, diff / variance.clamp_min(1e-300).sqrt(), 0.0)
    return PerFeature(live_density, live_smoothed.log10() - ref_smoothed.log10(), z, test)


def drift_response(active: Tensor, tokens: float, ref: Reference, k: int,
                   direction: str, backend: Backend | None = None) -> DriftResponse:
    """The `k` features that moved most in `direction` ("hot": firing more than the
    reference, "cold": less), by z, with the summary divergence."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'hot' or 'cold', got {direction!r}")
    drift = per_feature(active, tokens, ref)
    rows = [DriftFeature(feature=f, live_density=float(drift.live_density[f]),
                         reference_density=float(ref.density[f]),
                         log_ratio=float(drift.log_ratio[f]), z=float(drift.z[f]))
            for f in _top(drift.z, k, direction, backend)]
    return DriftResponse(direction=direction, test=drift.test,
                         divergence=_js(active.detach().to("cpu", torch.float64), ref),
                         live_tokens=int(tokens), reference=ref.source, features=rows)


def drift_summary(active: Tensor, tokens: float, ref: Reference, k: int,
                  backend: Backend | None = None) -> dict[str, Any]:
    """The widget's drift view: the divergence and the `k` hottest and coldest features as
    [feature, log_ratio, z], from one pass over the features (ranked by the C scan where
    `backend`, the monitor's, runs it)."""
    drift = per_feature(active, tokens, ref)

    def rows(direction: str) -> list[list[float]]:
        return [[f, round(float(drift.log_ratio[f]), 4), round(float(drift.z[f]), 3)]
                for f in _top(drift.z, k, direction, backend)]

    divergence = _js(active.detach().to("cpu", torch.float64), ref)
    return {"reference": ref.source[:120], "test": drift.test,
            "divergence": None if math.isnan(divergence) else round(divergence, 6),
            "hot": rows("hot"), "cold": rows("cold")}


def _top(z: Tensor, k: int, direction: str, backend: Backend | None) -> list[int]:
    """The `k` features with the largest z ("hot") or smallest ("cold"); ties to the lower
    index."""
    return top_k_stable(z if direction == "hot" else -z, k, backend).tolist()


def _js(active: Tensor, ref: Reference) -> float:
    """Jensen-Shannon divergence (bits) between the shares of firing over features."""
    p = active / active.sum() if active.sum() > 0 else None
    r = ref.active if ref.active is not None else ref.density
    q = r / r.sum() if r.sum() > 0 else None
    if p is None or q is None:
        return math.nan
    m = (p + q) / 2

    def kl(a: Tensor) -> float:
        nz = a > 0
        return float((a[nz] * (a[nz] / m[nz]).log2()).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)
