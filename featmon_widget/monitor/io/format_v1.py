"""Reading saves of format version 1, which named each part of the recorded state in the JSON
document (`stats`, `history`, `health`, `example_names`, `positions`, `tails`, `remote`, the
totals at the top level) and its tensors by hand (`tokens`, `remote.<field>`, `positions/<i>`,
`tails/<i>`). `upgraded` gives the same values in the current layout (`parts`, and tensors
`<part>.<tensor>`), which the parts then check like any other save: nothing is converted, only
renamed, so a version-1 save loads bit for bit (its remote view gains the one total version 1
did not keep, the other ranks' active tokens: their tokens)."""

from __future__ import annotations

from typing import Any

import torch

from ...checks import cut

Tensor = torch.Tensor

# The version-1 keys that move into `parts`, and the types they must have.
_V1_TYPES: dict[str, type | tuple[type, ...]] = {
    "forward_passes": int, "since": (int, float), "active_since": (int, float),
    "stats": dict, "health": dict, "history": dict, "example_names": dict, "positions": list,
    "tails": list,
}
_MOVED = (*_V1_TYPES, "remote")


def upgraded(meta: dict[str, Any], tensors: dict[str, Tensor],
             version: int) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A version-1 document and its tensors in the layout of format `version` (the caller's
    current one); a ValueError names a key of the wrong type."""
    check_types(meta, _V1_TYPES)
    remote = meta.get("remote")
    if isinstance(remote, dict) and "tokens" in remote and "active_tokens" not in remote:
        # Version 1 did not keep the other ranks' active tokens: their tokens, exact unless
        # another rank had changed its threshold before the sync.
        remote = {**remote, "active_tokens": remote["tokens"]}
    parts = {
        "stats": {"merged_any": meta["stats"].get("merged_any"), "remote": remote is not None},
        "history": meta["history"],
        "values": {},
        "examples": {"names": meta["example_names"], "tails": meta["tails"]},
        "health": meta["health"],
        "positions": {"requests": meta["positions"]},
        "totals": {"forward_passes": meta["forward_passes"], "since": meta["since"],
                   "active_since": meta["active_since"], "remote": remote},
    }
    document = {k: v for k, v in meta.items() if k not in _MOVED}
    document.update(format_version=version, read_from_format_version=1, parts=parts)
    return document, {_renamed(name): t for name, t in tensors.items()}


def _renamed(name: str) -> str:
    if name in ("tokens", "active_tokens"):
        return f"totals.{name}"
    for old, new in (("remote.", "stats.remote."), ("positions/", "positions."),
                     ("tails/", "examples.tails.")):
        if name.startswith(old):
            return new + name[len(old):]
    return name


def check_types(meta: dict[str, Any], types: dict[str, type | tuple[type, ...]]) -> None:
    """Raise ValueError unless every key of `types` is in `meta` with its type (an int is
    never a bool)."""
    for key, kind in types.items():
        value = meta.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            raise ValueError(f"{key!r} is missing or not a {' or '.join(k.__name__ for k in kinds)}"
                             f" (got {cut(repr(value), 60)}): the save is corrupt")
