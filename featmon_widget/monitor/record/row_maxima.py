"""The top examples' int64 keys (a float32 value and an age packed to sort as one, see
`examples`), and each sequence row's per-feature maximum (their candidates) in torch: of dense
features, and of a TopK SAE's (indices, values). The CPU finds them in C (`stats/native.py`)."""

from __future__ import annotations

import torch

Tensor = torch.Tensor

EMPTY = torch.iinfo(torch.int64).min  # the key of an empty slot
_LOW = 1 << 32


def ordered_bits(values: Tensor) -> Tensor:
    """float32 -> int32 with the same order (negative floats have their magnitude bits
    flipped); its own inverse."""
    bits = values.contiguous().view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def pack(values: Tensor, rank: Tensor | int, keep: Tensor) -> Tensor:
    """int64 keys that order by float32 `values`, then by lower `rank` (earlier), where `keep`;
    `EMPTY` elsewhere (see module doc)."""
    return torch.where(keep, (ordered_bits(values).to(torch.int64) << 32) + (_LOW - 1 - rank),
                       EMPTY)


def rank_of(keys: Tensor) -> Tensor:
    """The rank packed in `keys` (meaningless for empty slots)."""
    return _LOW - 1 - (keys & (_LOW - 1))


def value_of(keys: Tensor) -> Tensor:
    """The float32 values packed in `keys` (meaningless for empty slots)."""
    return ordered_bits_inverse((keys >> 32).to(torch.int32))


def ordered_bits_inverse(ordered: Tensor) -> Tensor:
    """Inverse of `ordered_bits`."""
    return (ordered ^ ((ordered >> 31) & 0x7FFFFFFF)).view(torch.float32)


def dense_row_maxima(acts: Tensor, ok: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Per row of `acts` [rows, tokens, F] and feature: the largest finite value above
    `threshold` among tokens where `ok` [rows, tokens] (-inf if none), and the earliest token
    holding it. One fused pass pair when compiled."""
    x = acts.to(torch.float32)
    v = torch.where(ok[:, :, None] & ((x - x) == 0) & (x > threshold), x, float("-inf"))
    best = v.amax(1)
    t = torch.arange(acts.shape[1], device=acts.device)[None, :, None]
    return best, torch.where(v == best[:, None, :], t, acts.shape[1]).amin(1)


def sparse_row_maxima(indices: Tensor, values: Tensor, ok: Tensor, threshold: float, rows: int,
                      tokens: int, d_sae: int) -> tuple[Tensor, Tensor]:
    """`dense_row_maxima` of TopK features `(indices, values)` [rows * tokens, k]: only stored
    values are candidates (implicit zeros never are)."""
    n, k = indices.shape
    t = (torch.arange(n, device=indices.device) % tokens)[:, None].expand(n, k)
    b = (torch.arange(n, device=indices.device) // tokens)[:, None].expand(n, k)
    v = values.to(torch.float32)
    good = ok[:, None] & (indices >= 0) & (indices < d_sae) & ((v - v) == 0) & (v > threshold)
    # Per (row, feature): the largest value, then the earliest token, in one int64 key.
    key = pack(v, t, good)
    slot = torch.where(good, b * d_sae + indices.clamp(0, d_sae - 1), 0)
    best = torch.full((rows * d_sae,), EMPTY, dtype=torch.int64, device=indices.device)
    best.scatter_reduce_(0, slot.reshape(-1), key.reshape(-1), "amax")
    best = best.view(rows, d_sae)
    value = torch.where(best != EMPTY, value_of(best), float("-inf"))
    return value, rank_of(best).clamp(0, tokens - 1)
