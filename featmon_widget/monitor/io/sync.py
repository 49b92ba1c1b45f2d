"""Statistics merged across the ranks of a torch.distributed job (`FeatureMonitor.sync`).

Every rank keeps recording its own totals. A sync gathers every rank's totals (never an
activation), and each rank combines the *other* ranks' totals, in rank order, into its `remote`
view; readers then see remote combined with the rank's own live totals. Syncing again replaces
the view, so nothing is counted twice, and a rank's own records are never changed by a sync.

Integers travel as the bits of float64 values (a `view`, not a conversion), so counts, min and
max arrive exactly; means and M2 are combined with Chan's pairwise formula. The features are
gathered in chunks, so the memory a sync needs stays bounded for any d_sae and world size.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..record.recording import Recording, RemoteView
from ..stats.moments import Totals, combine_totals, empty_totals

Tensor = torch.Tensor

# Bytes gathered per collective, over all ranks.
CHUNK_BYTES = 1 << 24
_FIELDS = len(Totals._fields)


def sync_recording(recording: Recording, lock: Any, group: Any = None) -> None:
    """Collective: make the other ranks' statistics (as of now) `recording`'s remote view.
    The local totals are copied under `lock`; the collectives run without it, so this rank's
    forwards and deliveries go on meanwhile. A reset or threshold change on this rank during
    the sync discards the result (it would describe what was just forgotten)."""
    with lock:
        local = Totals(*(t.clone() for t in recording.stats.local))
        scalars = [int(recording.tokens), int(recording.stats.dropped_indices),
                   recording.forward_passes]
        threshold = recording.config.threshold
        generation = (recording.since, recording.active_since)
    others, rows, me = gather_totals(local, scalars, threshold, recording.d_sae,
                                     recording.device, group)
    rest = [row for rank, row in enumerate(rows) if rank != me]
    with lock:
        if (recording.since, recording.active_since) != generation:
            return
        recording.stats.remote = others if rest else None
        recording.remote = RemoteView(
            tokens=sum(r[0] for r in rest), dropped_indices=sum(r[1] for r in rest),
            forward_passes=sum(r[2] for r in rest), ranks=len(rows), synced_at=time.time(),
        ) if rest else None


def gather_totals(local: Totals, scalars: list[int], threshold: float, d_sae: int,
                  device: torch.device, group: Any = None
                  ) -> tuple[Totals, list[list[int]], int]:
    """Collective: the other ranks' totals combined in rank order (on `device`), every rank's
    `scalars` (tokens, dropped indices, forward passes) rank by rank, and this rank. Every
    rank must call it; ranks that disagree on d_sae or the threshold all raise the same
    ValueError."""
    dist = _distributed()
    world, me = dist.get_world_size(group), dist.get_rank(group)
    wire = _wire_device(dist, group, device)
    threshold_bits = torch.tensor([threshold], dtype=torch.float64).view(torch.int64)
    header = torch.tensor([d_sae, int(threshold_bits), *scalars], dtype=torch.int64)
    rows = [h.cpu().tolist() for h in _all_gather(dist, header.to(wire), world, group)]
    _check_agreement(rows)
    others = empty_totals(d_sae, device)
    chunk = max(1, CHUNK_BYTES // (8 * _FIELDS * world))
    for start in range(0, d_sae, chunk):
        part = slice(start, min(d_sae, start + chunk))
        packed = torch.stack([_as_float64_bits(t[part]) for t in local]).to(wire)
        combined = Totals(*(t[part] for t in others))
        for rank, gathered in enumerate(_all_gather(dist, packed, world, group)):
            if rank != me:
                combined = combine_totals(combined, _unpack(gathered.to(device)))
        for target, value in zip(others, combined, strict=True):
            target[part] = value
    return others, [row[2:] for row in rows], me


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


def _as_float64_bits(t: Tensor) -> Tensor:
    return t.contiguous().view(torch.float64) if t.dtype == torch.int64 else t


def _unpack(packed: Tensor) -> Totals:
    """[8, F] float64 as gathered -> Totals (the three counts are int64 bits)."""
    counts = (packed[i].contiguous().view(torch.int64) for i in range(3))
    return Totals(*counts, *packed[3:].unbind(0))
