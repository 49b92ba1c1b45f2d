"""One rank of the torch.distributed tests (`test_sync.py` runs it under torchrun).

Every rank builds the same deterministic forwards and records its share (`owner`: uneven, so
ranks hold different numbers of forwards of different sizes; the SAE-encoded ones, whose
reconstructions the health figures sample, never go to rank 0), then syncs; the mode says what
else happens ("again": a sync of ranks that disagree first, then two syncs and a forward on
rank 0 after them). Rank 0 saves its monitor into the output folder given as the first argument and
writes what its readers then say (`figures`) to `figures.json` there.
"""

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from featmon_widget import FeatureMonitor, SparseAutoencoder

D_SAE = 300
D_IN = 16
FORWARDS = 14
HEALTH_EVERY = 2  # each rank samples its own forwards 0, 2, 4, ...
SELECTED = (7, 9, 42)  # their co-firing counts sync too (7 and 9 meet NaN and Inf)
CONFIG: dict[str, Any] = dict(device="cpu", compile=False, history_size=16,
                              health_every=HEALTH_EVERY, selected=SELECTED)
EXTRA = torch.full((5, D_SAE), 2.0)  # what rank 0 records after the sync in mode "continue"


def make_sae() -> SparseAutoencoder:
    """The SAE that encodes (and reconstructs) the "encode" forwards."""
    g = torch.Generator().manual_seed(99)
    return SparseAutoencoder.from_tensors(
        torch.randn(D_IN, D_SAE, generator=g), torch.randn(D_SAE, generator=g) * 0.1,
        torch.randn(D_SAE, D_IN, generator=g) * 0.3, torch.randn(D_IN, generator=g))


def batches() -> list[tuple[str, torch.Tensor, torch.Tensor | None]]:
    """The job's forwards: dense (NaN, Inf, a wide offset so the shifted sums matter), TopK
    (indices, values) and SAE inputs to encode, of different sizes."""
    g = torch.Generator().manual_seed(1234)
    out: list[tuple[str, torch.Tensor, torch.Tensor | None]] = []
    for i in range(FORWARDS):
        if i % 3 == 2:
            rows = 20 + 3 * i
            indices = torch.stack([torch.randperm(D_SAE, generator=g)[:16] for _ in range(rows)])
            out.append(("sparse", indices, torch.rand(rows, 16, generator=g) * 4))
        elif i % 4 == 1:
            x = torch.randn(1 + i % 2, 6 + i, D_IN, generator=g) * 2 + 0.5
            out.append(("encode", x, None))
        else:
            acts = torch.randn(1 + i % 3, 5 + (7 * i) % 20, D_SAE, generator=g) * (1 + i)
            acts += 1000.0 * (i % 2)
            acts[0, 3, 7] = float("nan")
            acts[-1, 4, 9] = float("inf")
            out.append(("dense", acts.relu() if i % 4 == 0 else acts, None))
    return out


def owner(i: int, kind: str, world: int) -> int:
    """The rank that records forward `i`."""
    if kind == "encode":
        return 1 + (i // 4) % (world - 1)
    return (i * i + i // 4) % world


def record_one(monitor: FeatureMonitor, sae: SparseAutoencoder, kind: str, a: torch.Tensor,
               b: torch.Tensor | None) -> None:
    """Record one forward of `batches()`."""
    if kind == "dense":
        monitor.on_activation(a)
    elif kind == "sparse":
        monitor.on_sparse_activation(a, b)
    else:
        monitor.encode_and_record(sae, a, "enc")


def reference_monitor() -> FeatureMonitor:
    """The drift reference every test compares with."""
    g = torch.Generator().manual_seed(7)
    monitor = FeatureMonitor(D_SAE, **CONFIG)
    monitor.on_activation(torch.randn(3, 40, D_SAE, generator=g) + 0.3)
    return monitor


def figures(monitor: FeatureMonitor) -> dict[str, Any]:
    """What the readers of `monitor` say (JSON-able): health, drift, the counts another monitor
    compares with, the firing summary (frequency histogram and counts), the co-firing counts,
    every feature's distribution and the totals."""
    active, tokens = monitor.reference_counts()
    state = monitor.state
    rec = monitor._recording
    drift = {d: dataclasses.asdict(monitor.get_drift(20, d)) for d in ("hot", "cold")}
    for response in drift.values():
        del response["reference"]  # names the reference object
    return {
        "health": dataclasses.asdict(monitor.get_health()),
        "drift": drift,
        "reference_counts": [active.tolist(), tokens],
        "firing": rec.firing_summary().tolist(),
        "cofiring": [dataclasses.asdict(monitor.get_cofiring(f, k=20)) for f in SELECTED],
        # Every feature's counts (the quantiles and edges follow from them and the max).
        "distributions": rec.distributions.rows_of(
            torch.arange(monitor.d_sae, device=rec.device)).tolist(),
        "totals": [state.total_tokens, state.forward_passes, state.dropped_indices,
                   state.synced_ranks],
    }


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if mode == "again":  # first, ranks that disagree on d_sae
        try:
            FeatureMonitor(D_SAE + rank, **CONFIG).sync()
        except ValueError as exc:
            (out / f"error{rank}.txt").write_text(str(exc))
        try:  # and on the selected features (of one count): their co-firing cannot add up
            FeatureMonitor(D_SAE, **{**CONFIG, "selected": (rank + 1, 50)}).sync()
        except ValueError as exc:
            (out / f"selection{rank}.txt").write_text(str(exc))
    monitor = FeatureMonitor(D_SAE, **CONFIG)
    sae = make_sae()
    for i, (kind, a, b) in enumerate(batches()):
        if owner(i, kind, world) == rank:
            record_one(monitor, sae, kind, a, b)
    state = monitor.sync()
    if mode == "again":
        monitor.sync()  # syncing again must not count anything twice
        if rank == 0:
            monitor.on_activation(EXTRA)  # recorded after the sync: joins the view at once
    assert state.synced_ranks == world, state
    if rank == 0:
        monitor.set_reference(reference_monitor())
        monitor.save(out / "rank0")
        (out / "figures.json").write_text(json.dumps(figures(monitor)))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
