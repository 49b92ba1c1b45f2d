"""One rank of the torch.distributed tests (`test_sync.py` runs it under torchrun).

Every rank builds the same deterministic batches and records its share (batch i goes to rank
i % world), then syncs; the mode says what else happens. Rank 0 saves its monitor into the
output folder given as the first argument.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from featmon_widget import FeatureMonitor

D_SAE = 300
BATCHES = 12


def batches() -> list[tuple[str, torch.Tensor, torch.Tensor | None]]:
    """The job's data: dense batches (NaN, Inf, a wide offset so the shifted sums matter) and
    TopK batches (indices, values)."""
    g = torch.Generator().manual_seed(1234)
    out: list[tuple[str, torch.Tensor, torch.Tensor | None]] = []
    for i in range(BATCHES):
        if i % 3 == 2:
            indices = torch.stack([torch.randperm(D_SAE, generator=g)[:16] for _ in range(40)])
            out.append(("sparse", indices, torch.rand(40, 16, generator=g) * 4))
            continue
        acts = torch.randn(2, 25, D_SAE, generator=g) * (1 + i) + 1000.0 * (i % 2)
        acts[0, 3, 7] = float("nan")
        acts[1, 4, 9] = float("inf")
        out.append(("dense", acts.relu() if i % 4 == 0 else acts, None))
    return out


def record(monitor: FeatureMonitor, rank: int, world: int) -> None:
    """Record this rank's share of `batches()`."""
    for i, (kind, a, b) in enumerate(batches()):
        if i % world != rank:
            continue
        if kind == "dense":
            monitor.on_activation(a)
        else:
            monitor.on_sparse_activation(a, b)


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    d_sae = D_SAE + (1 if mode == "mismatch" and rank == 1 else 0)
    monitor = FeatureMonitor(d_sae, device="cpu", compile=False, history_size=16)
    if mode == "mismatch":
        try:
            monitor.sync()
        except ValueError as exc:
            (out / f"error{rank}.txt").write_text(str(exc))
        dist.destroy_process_group()
        return
    record(monitor, rank, world)
    state = monitor.sync()
    if mode == "twice":
        monitor.sync()  # syncing again must not count anything twice
    if mode == "continue" and rank == 0:
        monitor.on_activation(torch.full((5, D_SAE), 2.0))  # recorded after the sync
    assert state.synced_ranks == world, state
    if rank == 0:
        monitor.save(out / "rank0")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
