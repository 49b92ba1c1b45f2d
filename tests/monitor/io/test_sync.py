"""`FeatureMonitor.sync` under torch.distributed: 2, 3 and 4 gloo processes (torchrun), each
recording a different number of forwards of different sizes (health sampled on some, SAE
reconstructions on some ranks only), against one process recording all of it: every figure a
reader sees on rank 0 after the sync, live and after saving and loading."""

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from distributed_worker import (
    CONFIG,
    D_SAE,
    EXTRA,
    batches,
    figures,
    make_sae,
    owner,
    record_one,
    reference_monitor,
)

from featmon_widget import FeatureMonitor
from featmon_widget.monitor.oversight.drift import reference_from

WORKER = Path(__file__).with_name("distributed_worker.py")
EXACT = ("count", "nan_count", "active_count", "min", "max")
MOMENTS = ("active_sum", "mean", "m2")


def run_job(tmp_path: Path, world: int, mode: str = "plain") -> Path:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parents[3])}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={world}", str(WORKER), str(tmp_path), mode],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp_path


def single_process(world: int, extra: bool = False) -> FeatureMonitor:
    """One process recording every rank's forwards, each sampled for health as its rank
    sampled it (the sampling rule counts a rank's own forwards)."""
    monitor = FeatureMonitor(D_SAE, **CONFIG)
    health, sae = monitor._recording.health, make_sae()
    seen = [0] * world
    for i, (kind, a, b) in enumerate(batches()):
        rank = owner(i, kind, world)
        health.forwards, seen[rank] = seen[rank], seen[rank] + 1
        record_one(monitor, sae, kind, a, b)
    if extra:  # rank 0's forward after the sync
        health.forwards = seen[0]
        monitor.on_activation(EXTRA)
    monitor.set_reference(reference_monitor())
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


def assert_same_figures(got: Any, want: Any, where: str = "") -> None:
    """Ints (counts) and strings equal, floats within 1e-12 relative, structures alike."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            assert_same_figures(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_same_figures(a, b, f"{where}[{i}]")
    elif isinstance(want, float):
        assert isinstance(got, float), where
        if math.isnan(want) or math.isinf(want):
            assert got == want or (math.isnan(got) and math.isnan(want)), where
        else:
            assert abs(got - want) <= 1e-12 * abs(want), (where, got, want)
    else:
        assert got == want and type(got) is type(want), (where, got, want)


def assert_same_as_one_process(folder: Path, want: FeatureMonitor, world: int) -> None:
    """Rank 0's readers, live (`figures.json`) and loaded from its save, say what one process
    says; the sums come from several ranks, so the check is not vacuous."""
    expected = json.loads(json.dumps(figures(want)))
    health = expected["health"]
    assert health["reconstruction_tokens"] > 0 and health["sampled_forwards"] > 2
    expected["totals"][-1] = world  # synced_ranks: one process has no other ranks
    live = json.loads((folder / "figures.json").read_text())
    assert_same_figures(live, expected, "live")
    loaded = FeatureMonitor.load(folder / "rank0", compile=False)
    loaded.set_reference(reference_monitor())
    assert_same_figures(json.loads(json.dumps(figures(loaded))), expected, "loaded")
    assert_same_statistics(loaded, want)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """Each torchrun job once per module: (world, mode) -> its output folder."""
    done: dict[tuple[int, str], Path] = {}

    def run(world: int, mode: str = "plain") -> Path:
        if (world, mode) not in done:
            done[world, mode] = run_job(tmp_path_factory.mktemp(f"{mode}{world}"), world, mode)
        return done[world, mode]

    return run


@pytest.mark.parametrize("world", [3, 4])  # 2 ranks: the next test
def test_sync_equals_one_process(job, world):
    assert_same_as_one_process(job(world), single_process(world), world)


def test_syncing_again_counts_nothing_twice_and_later_records_join(job):
    assert_same_as_one_process(job(2, "again"), single_process(2, extra=True), 2)


def test_a_reset_or_threshold_change_forgets_the_other_ranks(job):
    merged = FeatureMonitor.load(job(3) / "rank0", compile=False)
    mine = merged._recording
    merged.configure(threshold=0.5)  # the other ranks' active counts and health go
    assert merged.get_health().tokens == 0 and merged.get_health().sampled_forwards == 0
    assert merged.reference_counts()[1] == 0.0
    assert merged.state.total_tokens == int(mine.tokens) + mine.remote.tokens
    merged.reset_statistics()
    assert merged.state.synced_ranks == 1 and merged.state.total_tokens == 0


def test_a_saved_synced_monitor_is_a_reference_of_all_ranks(job):
    ref = reference_from(job(4) / "rank0", D_SAE)
    active, tokens = single_process(4).reference_counts()
    assert torch.equal(ref.active, active) and ref.tokens == tokens


def test_ranks_that_disagree_all_get_the_same_error(job):
    folder = job(2, "again")
    errors = [(folder / f"error{r}.txt").read_text() for r in range(2)]
    assert errors[0] == errors[1]
    assert "d_sae [300, 301]" in errors[0]


def test_ranks_selecting_different_features_all_get_an_error(job):
    folder = job(2, "again")
    for rank in range(2):
        text = (folder / f"selection{rank}.txt").read_text()
        assert "same selected features" in text and "[1, 50]" in text and "[2, 50]" in text


def test_cofiring_counts_sync_exactly(job):
    # `figures` holds get_cofiring of every selected feature: compared exactly above; here,
    # that the counts really came from several ranks.
    got = json.loads((job(3) / "figures.json").read_text())["cofiring"]
    loaded = FeatureMonitor.load(job(3) / "rank0", compile=False)
    local = loaded._recording.cofiring
    assert local.remote is not None and got[0]["tokens"] > int(local.tokens[0]) > 0
    assert [dataclasses.asdict(loaded.get_cofiring(f, k=20)) for f in (7, 9, 42)] == got


def test_sync_without_torch_distributed_says_what_to_do():
    monitor = FeatureMonitor(4, compile=False)
    with pytest.raises(RuntimeError, match="init_process_group"):
        monitor.sync()
