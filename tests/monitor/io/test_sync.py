"""`FeatureMonitor.sync` under torch.distributed: 2 and 4 gloo processes (torchrun) against one
process recording the same data."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_worker import D_SAE, batches

from featmon_widget import FeatureMonitor

WORKER = Path(__file__).with_name("distributed_worker.py")
EXACT = ("count", "nan_count", "active_count", "min", "max")
MOMENTS = ("active_sum", "mean", "m2")


def run_job(tmp_path: Path, world: int, mode: str = "plain") -> Path:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parents[2])}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={world}", str(WORKER), str(tmp_path), mode],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp_path


def single_process(extra: torch.Tensor | None = None) -> FeatureMonitor:
    monitor = FeatureMonitor(D_SAE, device="cpu", compile=False, history_size=16)
    for kind, a, b in batches():
        if kind == "dense":
            monitor.on_activation(a)
        else:
            monitor.on_sparse_activation(a, b)
    if extra is not None:
        monitor.on_activation(extra)
    return monitor


def assert_same_statistics(got: FeatureMonitor, want: FeatureMonitor) -> None:
    g, w = got._recording.stats.totals, want._recording.stats.totals
    for name in EXACT:
        assert torch.equal(getattr(g, name), getattr(w, name)), name
    for name in MOMENTS:
        a, b = getattr(g, name), getattr(w, name)
        scale = b.abs().clamp_min(1e-300)
        assert ((a - b).abs() / scale).max() <= 1e-12, name
    assert got.state.total_tokens == want.state.total_tokens
    assert got.state.forward_passes == want.state.forward_passes
    def top(monitor: FeatureMonitor) -> list[int]:
        return [f.feature_idx for f in monitor.get_top_features(50, "active_count").features]

    assert top(got) == top(want)


@pytest.mark.parametrize("world", [2, 4])
def test_sync_equals_one_process(tmp_path, world):
    run_job(tmp_path, world)
    merged = FeatureMonitor.load(tmp_path / "rank0", compile=False)
    assert merged.state.synced_ranks == world
    assert_same_statistics(merged, single_process())


def test_syncing_twice_counts_nothing_twice(tmp_path):
    run_job(tmp_path, 2, "twice")
    assert_same_statistics(FeatureMonitor.load(tmp_path / "rank0", compile=False),
                           single_process())


def test_records_after_a_sync_join_the_view(tmp_path):
    run_job(tmp_path, 2, "continue")
    merged = FeatureMonitor.load(tmp_path / "rank0", compile=False)
    assert_same_statistics(merged, single_process(torch.full((5, D_SAE), 2.0)))


def test_ranks_that_disagree_all_get_the_same_error(tmp_path):
    run_job(tmp_path, 2, "mismatch")
    errors = [(tmp_path / f"error{r}.txt").read_text() for r in range(2)]
    assert errors[0] == errors[1]
    assert "d_sae [300, 301]" in errors[0]


def test_sync_without_torch_distributed_says_what_to_do():
    monitor = FeatureMonitor(4, compile=False)
    with pytest.raises(RuntimeError, match="init_process_group"):
        monitor.sync()
