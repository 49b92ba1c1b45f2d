"""The recorded state merged across the ranks of a torch.distributed job (`FeatureMonitor.sync`).

Every rank keeps recording its own. A sync gathers, from every rank, what each part of the
recorded state shares (`registry.StatePart.sync_rules`: the statistics' per-feature totals,
the token and forward-pass totals, the health sums; never an activation), and each rank merges
the *other* ranks' values, in rank order, by each tensor's rule (`SUM`; `CHAN`: counts,
Chan-combined mean and M2, min and max; `pooled_moments`) into the part's remote view; readers
then see remote combined with the rank's own live values. Syncing again replaces the view, so
nothing is counted twice, and a rank's own records are never changed by a sync. Parts without
rules stay local.

Integers travel as the bits of float64 values (a `view`, not a conversion), so counts arrive
exactly. Each part's tensors of one rule travel together, in chunks, so the memory a sync needs
stays bounded for any d_sae and world size.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from ..record.recording import Recording
from ..record.registry import Rule

Tensor = torch.Tensor
Shares = dict[str, dict[str, Tensor]]

# Bytes gathered per collective, over all ranks.
CHUNK_BYTES = 1 << 24


def sync_recording(recording: Recording, lock: Any, group: Any = None) -> None:
    """Collective: make the other ranks' recorded state (as of now) `recording`'s remote view.
    What the parts share is copied under `lock`; the collectives run without it, so this
    rank's forwards and deliveries go on meanwhile. A reset or threshold change on this rank
    during the sync discards the result (it would describe what was just forgotten)."""
    with lock:
        shares, rules = recording.state_parts().sync_state()
        threshold = recording.config.threshold
        generation = (recording.since, recording.active_since)
    merged = gather_merged(shares, rules, threshold, recording.d_sae, recording.device, group)
    with lock:
        if (recording.since, recording.active_since) != generation:
            return
        recording.state_parts().take_remote(merged)


def gather_merged(shares: Shares, rules: dict[str, dict[str, Rule]], threshold: float,
                  d_sae: int, device: torch.device, group: Any = None) -> Shares | None:
    """Collective: every part's `shares` of the other ranks, merged in rank order by `rules`
    (on `device`); None when there is no other rank. Every rank must call it; ranks that
    disagree on d_sae or the threshold all raise the same ValueError, and so do ranks whose
    parts share different tensors."""
    dist = _distributed()
    world, me = dist.get_world_size(group), dist.get_rank(group)
    wire = _wire_device(dist, group, device)
    groups = _groups(shares, rules)
    threshold_bits = torch.tensor([threshold], dtype=torch.float64).view(torch.int64)
    header = torch.tensor([d_sae, int(threshold_bits), _layout(groups)], dtype=torch.int64)
    _check_agreement([h.cpu().tolist() for h in _all_gather(dist, header.to(wire), world,
                                                            group)])
    groups = _agreed_lengths(dist, groups, world, wire, group)
    merged: Shares = {part: {} for part in shares}
    for part, rule, tensors in groups:
        merged[part].update(_merge_group(dist, rule, tensors, world, me, wire, device, group))
    return merged if world > 1 else None


def _groups(shares: Shares, rules: dict[str, dict[str, Rule]]
            ) -> list[tuple[str, Rule, dict[str, Tensor]]]:
    """Each part's shared tensors of one rule and one size: what travels together."""
    out: dict[tuple[str, str, int], tuple[str, Rule, dict[str, Tensor]]] = {}
    for part, tensors in shares.items():
        for name, tensor in tensors.items():
            rule = rules[part][name]
            key = (part, rule.name, tensor.numel())
            out.setdefault(key, (part, rule, {}))[2][name] = tensor
    return list(out.values())


def _layout(groups: list[tuple[str, Rule, dict[str, Tensor]]]) -> int:
    """A digest of what travels (parts, rules, names, dtypes, sizes), as an int64; the sizes
    of rules that may be empty are agreed on afterwards (`_agreed_lengths`)."""
    text = repr([(part, rule.name, [(n, str(t.dtype), None if rule.may_be_empty else t.numel())
                                    for n, t in tensors.items()])
                 for part, rule, tensors in groups])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little", signed=True)


def _agreed_lengths(dist: Any, groups: list[tuple[str, Rule, dict[str, Tensor]]], world: int,
                    wire: torch.device, group: Any) -> list[tuple[str, Rule, dict[str, Tensor]]]:
    """Collective (when a rule may be empty): each such group at the one length the ranks that
    hold it send, a rank that holds none sending the rule's `start` of that length. Ranks whose
    lengths differ all raise the same ValueError."""
    flexible = [i for i, (_, rule, _) in enumerate(groups) if rule.may_be_empty]
    if not flexible:
        return groups
    mine = torch.tensor([next(iter(groups[i][2].values())).numel() for i in flexible],
                        dtype=torch.int64)
    rows = [r.cpu().tolist() for r in _all_gather(dist, mine.to(wire), world, group)]
    out = list(groups)
    for column, i in enumerate(flexible):
        part, rule, tensors = groups[i]
        lengths = sorted({row[column] for row in rows} - {0})
        if len(lengths) > 1:
            raise ValueError(f"sync needs one length of {part}'s {sorted(tensors)} on every rank "
                             f"that holds them; got {[row[column] for row in rows]} (rank by "
                             f"rank)")
        if lengths and mine[column] == 0:
            like = {n: torch.zeros(lengths[0], dtype=t.dtype, device=t.device)
                    for n, t in tensors.items()}
            out[i] = (part, rule, rule.start(like))
    return out


def _merge_group(dist: Any, rule: Rule, tensors: dict[str, Tensor], world: int, me: int,
                 wire: torch.device, device: torch.device, group: Any) -> dict[str, Tensor]:
    """The other ranks' `tensors` (one size each) merged by `rule`, a chunk at a time."""
    size = next(iter(tensors.values())).numel()
    flat = {n: t.reshape(-1) for n, t in tensors.items()}
    out = {n: torch.empty_like(t, device=device) for n, t in tensors.items()}
    chunk = max(1, CHUNK_BYTES // (8 * len(tensors) * world))
    chunk = max(rule.unit, chunk // rule.unit * rule.unit)  # whole items
    for start in range(0, size, chunk):
        part = slice(start, min(size, start + chunk))
        piece = {n: t[part] for n, t in flat.items()}
        packed = torch.stack([_as_float64_bits(t) for t in piece.values()]).to(wire)
        combined = rule.start({n: t.to(device) for n, t in piece.items()})
        for rank, gathered in enumerate(_all_gather(dist, packed, world, group)):
            if rank != me:
                combined = rule.combine(combined, _unpack(gathered.to(device), piece))
        for name, value in combined.items():
            out[name].view(-1)[part] = value
    return out


def _distributed() -> Any:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("sync needs torch.distributed initialised first (e.g. run under "
                           "torchrun and call torch.distributed.init_process_group())")
    return dist


def _wire_device(dist: Any, group: Any, device: torch.device) -> torch.device:
    """Where tensors travel for the group's backend: the statistics' own device when its
    backend is a device one (NCCL for CUDA), the CPU for gloo; a CPU-only group's backend
    config names no device (e.g. "gloo") and a CPU-held monitor under NCCL sends via CUDA."""
    config = str(dist.get_backend_config(group)).lower()
    per_device = dict(part.split(":", 1) for part in config.split(",") if ":" in part)
    backend = per_device.get(device.type, config if ":" not in config else "")
    if device.type != "cpu" and backend and backend != "gloo":
        return device
    if backend == "gloo" or "gloo" in config:
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def _all_gather(dist: Any, tensor: Tensor, world: int, group: Any) -> list[Tensor]:
    out = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(out, tensor.contiguous(), group=group)
    return out


def _check_agreement(rows: list[list[int]]) -> None:
    d_saes = [row[0] for row in rows]
    thresholds = [torch.tensor([row[1]], dtype=torch.int64).view(torch.float64).item()
                  for row in rows]
    if len(set(d_saes)) > 1 or len(set(thresholds)) > 1:
        raise ValueError(f"sync needs one d_sae and one threshold on every rank; got d_sae "
                         f"{d_saes} and threshold {thresholds} (rank by rank)")
    if len({row[2] for row in rows}) > 1:
        raise ValueError("sync needs the same recorded state on every rank; the ranks' parts "
                         "share different tensors (a part added on some ranks only?)")


def _as_float64_bits(t: Tensor) -> Tensor:
    """`t` as float64 lanes: int64 as its bits, other integers widened first, floats widened
    (every widening exact)."""
    if t.dtype == torch.float64:
        return t.contiguous()
    if t.is_floating_point():
        return t.to(torch.float64)
    return t.to(torch.int64).contiguous().view(torch.float64)


def _unpack(packed: Tensor, like: dict[str, Tensor]) -> dict[str, Tensor]:
    """[fields, n] float64 as gathered -> tensors of `like`'s names and dtypes."""
    out = {}
    for row, (name, t) in zip(packed.unbind(0), like.items(), strict=True):
        value = row if t.is_floating_point() else row.contiguous().view(torch.int64)
        out[name] = value.to(t.dtype)
    return out
