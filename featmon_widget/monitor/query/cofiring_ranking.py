"""What a selected feature fires with: its co-firing counts (`record.cofiring`) ranked by
Jaccard on the device, and only the k rows read back."""

from __future__ import annotations

import torch

from ...types import CoFiringFeature, CoFiringResponse
from ..record.cofiring import CoFiring
from .ranking import top_k_stable_torch


def cofiring_of(part: CoFiring, feature: int, k: int, labels: dict[int, str]
                ) -> CoFiringResponse:
    """The `k` features with the highest Jaccard index with selected `feature` (a ValueError
    when it is not selected), ties to the lower index; features that never fired with it and
    the feature itself are left out."""
    if feature not in part.features:
        raise ValueError(f"feature {feature} is not selected: co-firing is counted for the "
                         f"selected features only, from the moment they are selected; select "
                         f"it first, e.g. monitor.configure(selected=[..., {feature}])")
    j = part.features.index(feature)
    both, own, tokens = part.totals(j)
    mine = own[feature]
    union = (mine + own - both).to(torch.float64)
    jaccard = torch.where(both > 0, both / union.clamp_min(1), 0.0)
    jaccard[feature] = -1.0  # never itself
    jaccard = torch.where(both > 0, jaccard, -1.0)  # never a feature that did not fire with it
    top = top_k_stable_torch(jaccard, k)
    picked = torch.stack([top, both[top], own[top]]).tolist()
    values = jaccard[top].tolist()
    n, active = int(tokens), int(mine)
    rows = [CoFiringFeature(feature=f, both=b, jaccard=v, active=a,
                            lift=b * n / (a * active) if a and active else None,
                            label=labels.get(f))
            for f, b, a, v in zip(*picked, values, strict=True) if v >= 0]
    return CoFiringResponse(feature=feature, tokens=n, active=active, features=rows,
                            label=labels.get(feature))
