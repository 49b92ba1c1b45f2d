"""What a selected feature fires with: its co-firing counts (`record.cofiring`) ranked by
Jaccard on the device, and only the k rows read back."""

from __future__ import annotations

import torch

from ...snapshot.source import CoFiringTop
from ...types import CoFiringFeature, CoFiringResponse
from ..record.cofiring import CoFiring
from .ranking import top_k_stable_torch

Tensor = torch.Tensor


def ranked_cofiring(part: CoFiring, j: int, k: int) -> tuple[Tensor, ...]:
    """Selected feature j's `k` features of highest Jaccard index with it, ties to the lower
    index (device tensors, nothing read back): features, both, their active counts, Jaccard
    (-1 for the feature itself and features that never fired with it: they come last and
    readers drop them), then its tokens counted and own active count."""
    feature = part.features[j]
    both, own, tokens = part.totals(j)
    mine = own[feature]
    union = (mine + own - both).to(torch.float64)
    fired = both > 0
    fired[feature] = False  # never itself
    jaccard = torch.where(fired, both / union.clamp_min(1), -1.0)
    top = top_k_stable_torch(jaccard, k)
    return top, both[top], own[top], jaccard[top], tokens, mine


def cofiring_of(part: CoFiring, feature: int, k: int, labels: dict[int, str]
                ) -> CoFiringResponse:
    """The `k` features with the highest Jaccard index with selected `feature` (a ValueError
    when it is not selected), ties to the lower index; features that never fired with it and
    the feature itself are left out."""
    if feature not in part.features:
        raise ValueError(f"feature {feature} is not selected: co-firing is counted for the "
                         f"selected features only, from the moment they are selected; select "
                         f"it first, e.g. monitor.configure(selected=[..., {feature}])")
    top, both, own, jaccard, tokens, mine = ranked_cofiring(part, part.features.index(feature),
                                                            k)
    n, active = int(tokens), int(mine)
    rows = [CoFiringFeature(feature=f, both=b, jaccard=v, active=a,
                            lift=b * n / (a * active) if a and active else None,
                            label=labels.get(f))
            for f, b, a, v in zip(top.tolist(), both.tolist(), own.tolist(), jaccard.tolist(),
                                  strict=True) if v >= 0]
    return CoFiringResponse(feature=feature, tokens=n, active=active, features=rows,
                            label=labels.get(feature))


def cofiring_top(part: CoFiring, k: int) -> CoFiringTop:
    """`ranked_cofiring` of every selected feature, stacked for a snapshot (on the device)."""
    k = min(k, part.d_sae)
    ranked = [ranked_cofiring(part, j, k) for j in range(len(part.features))]
    if not ranked:
        empty = torch.zeros(0, dtype=torch.int64, device=part.device)
        return CoFiringTop((), empty.reshape(0, 3, k), empty.reshape(0, k).double(),
                           empty.reshape(0, 2))
    return CoFiringTop(part.features, torch.stack([torch.stack(r[:3]) for r in ranked]),
                       torch.stack([r[3] for r in ranked]),
                       torch.stack([torch.stack(r[4:]) for r in ranked]))
