"""The registry of recorded state: a part added to a recording (a toy per-feature counter) is
saved, loaded, reset, synced across gloo ranks and counted in `memory_bytes` with no change to
saving, sync or the memory accounting. Run as a script, this file is one rank of that sync."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from featmon_widget import FeatureMonitor
from featmon_widget.monitor.io import saving
from featmon_widget.monitor.record.registry import (
    SUM,
    Event,
    Spec,
    StatePart,
    StateRegistry,
    check_tensors,
    pooled_moments,
)

D = 24


class Counter(StatePart):
    """A toy part: an int64 count per feature, summed across ranks, zeroed by a reset."""

    name = "toy"
    sync_rules = {"count": SUM}

    def __init__(self, d_sae: int) -> None:
        self.count = torch.zeros(d_sae, dtype=torch.int64)
        self.remote: torch.Tensor | None = None

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"count": self.count}

    def reset_on(self, event: Event) -> None:
        if event is Event.STATISTICS:
            self.count.zero_()
            self.remote = None

    def take_remote(self, merged: dict[str, torch.Tensor] | None) -> None:
        self.remote = None if merged is None else merged["count"]


def monitor_with_counter(**config) -> tuple[FeatureMonitor, Counter]:
    monitor = FeatureMonitor(D, compile=False, device="cpu", **config)
    counter = Counter(D)
    monitor._recording.extra_parts.append(counter)
    return monitor, counter


def record(monitor: FeatureMonitor, counter: Counter, seed: int = 0) -> None:
    acts = torch.randn(3, 4, D, generator=torch.Generator().manual_seed(seed)).relu()
    with monitor.request("r"):
        monitor.on_activation(acts)
    counter.count += (acts > 0).sum((0, 1))


def tensors_file(folder: Path) -> Path:
    """The tensors file the save in `folder` names."""
    return folder / json.loads((folder / "monitor.json").read_text())["tensors_file"]


def load_into(saved_folder: Path, monitor: FeatureMonitor) -> None:
    saving.restore_recording(monitor._recording, saving.read_save(saved_folder))


def test_a_new_part_is_saved_and_loaded(tmp_path):
    monitor, counter = monitor_with_counter()
    record(monitor, counter)
    monitor.save(tmp_path)
    assert "toy.count" in load_file(str(tensors_file(tmp_path)))
    assert "toy" in json.loads((tmp_path / "monitor.json").read_text())["parts"]
    loaded, loaded_counter = monitor_with_counter()
    load_into(tmp_path, loaded)
    assert torch.equal(loaded_counter.count, counter.count)
    assert loaded.get_statistics() == monitor.get_statistics()


def test_a_save_and_a_monitor_with_other_parts_do_not_mix(tmp_path):
    with_toy, counter = monitor_with_counter()
    record(with_toy, counter)
    with_toy.save(tmp_path / "with")
    plain = FeatureMonitor(D, compile=False, device="cpu")
    with pytest.raises(ValueError, match="parts"):
        load_into(tmp_path / "with", plain)
    assert plain.state.total_tokens == 0  # nothing was loaded
    plain.save(tmp_path / "without")
    with pytest.raises(ValueError, match="parts"):
        load_into(tmp_path / "without", monitor_with_counter()[0])


def test_a_bad_tensor_of_a_new_part_loads_nothing(tmp_path):
    monitor, counter = monitor_with_counter()
    record(monitor, counter)
    monitor.save(tmp_path)
    old = tensors_file(tmp_path)
    tensors = load_file(str(old))
    tensors["toy.count"] = tensors["toy.count"][:-1]
    old.unlink()
    save_file(tensors, str(tmp_path / "edited"))
    meta = json.loads((tmp_path / "monitor.json").read_text())
    meta["tensors_sha256"] = digest = saving._sha256(tmp_path / "edited")
    meta["tensors_file"] = f"tensors-{digest}.safetensors"
    (tmp_path / "edited").rename(tmp_path / meta["tensors_file"])
    (tmp_path / "monitor.json").write_text(json.dumps(saving.signed(meta)))
    fresh, fresh_counter = monitor_with_counter()
    with pytest.raises(ValueError, match=r"toy\.count.*\(23,\).*needs \(24,\)"):
        load_into(tmp_path, fresh)
    assert fresh.state.total_tokens == 0 and int(fresh_counter.count.sum()) == 0


def test_a_new_part_is_counted_and_reset():
    monitor, counter = monitor_with_counter()
    record(monitor, counter)
    state = monitor.state
    assert state.memory_bytes["toy"] == 8 * D
    assert state.device_bytes == sum(state.memory_bytes.values())
    monitor.configure(threshold=0.5)  # not a reset of this part
    monitor.clear_history()
    assert int(counter.count.sum()) > 0
    monitor.reset_statistics()
    assert int(counter.count.sum()) == 0


def test_every_event_reaches_every_part_once():
    seen = []

    class Listener(StatePart):
        def __init__(self, name: str) -> None:
            self.name = name

        def state_tensors(self):
            return {}

        def reset_on(self, event):
            seen.append((self.name, event))

    registry = StateRegistry([Listener("a"), Listener("b")])
    for event in Event:
        registry.reset(event)
    assert seen == [(n, e) for e in Event for n in "ab"]
    assert registry.memory_bytes() == {"a": 0, "b": 0}


def test_tensor_checks_name_the_part_and_the_tensor():
    spec = {"x": Spec((None, 2), torch.int64)}
    check_tensors("p", {"x": torch.zeros(5, 2, dtype=torch.int64)}, spec)
    with pytest.raises(ValueError, match=r"'p\.x' is \(5, 3\).*needs \(any, 2\)"):
        check_tensors("p", {"x": torch.zeros(5, 3, dtype=torch.int64)}, spec)
    with pytest.raises(ValueError, match=r"no tensor 'p\.x'"):
        check_tensors("p", {}, spec)
    with pytest.raises(ValueError, match=r"does not know: \['p\.y'\]"):
        check_tensors("p", {"x": torch.zeros(1, 2, dtype=torch.int64), "y": torch.zeros(1)},
                      spec)


def test_a_new_part_is_synced_by_its_rule(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[3])}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         __file__, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for me, other in ((0, 1), (1, 0)):
        assert "same recorded state" in ranks[me]["mismatch"]  # a rank without the part
        assert ranks[me]["remote"] == ranks[other]["count"]  # the other rank's, summed
        assert ranks[me]["synced_ranks"] == 2
        assert ranks[me]["tokens"] == 24  # both ranks' tokens, as before


def _rank(out: Path) -> None:
    """One rank of `test_a_new_part_is_synced_by_its_rule`."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    monitor = FeatureMonitor(D, compile=False, device="cpu")
    counter = Counter(D)
    if rank == 0:
        monitor._recording.extra_parts.append(counter)
    try:
        monitor.sync()
        mismatch = ""
    except ValueError as exc:
        mismatch = str(exc)
    if rank == 1:
        monitor._recording.extra_parts.append(counter)
    record(monitor, counter, seed=rank)
    state = monitor.sync()
    remote = counter.remote.tolist() if counter.remote is not None else None
    (out / f"rank{rank}.json").write_text(json.dumps({
        "mismatch": mismatch, "count": counter.count.tolist(), "remote": remote,
        "synced_ranks": state.synced_ranks, "tokens": state.total_tokens}))
    dist.destroy_process_group()


if __name__ == "__main__":
    _rank(Path(sys.argv[1]))


def test_pooled_moments_equal_the_moments_of_all_the_values():
    """Chan's merge of per-element mean and M2, float counts, in any order; no data (zeros,
    as a rank that holds none sends) changes nothing."""
    rule = pooled_moments("n", "mu", "m2")
    assert rule.may_be_empty and not SUM.may_be_empty
    g = torch.Generator().manual_seed(3)
    chunks = [torch.randn(rows, 5, generator=g, dtype=torch.float64) * 3 + 100
              for rows in (4, 1, 9)]

    def moments(x: torch.Tensor) -> dict[str, torch.Tensor]:
        mu = x.mean(0)
        return {"n": torch.full((5,), float(x.shape[0]), dtype=torch.float64), "mu": mu,
                "m2": (x - mu).square().sum(0)}

    merged = rule.start(moments(chunks[0]))
    for x in chunks:
        merged = rule.combine(merged, rule.combine(moments(x), rule.start(moments(x))))
    want = moments(torch.cat(chunks))
    for name in ("n", "mu", "m2"):
        assert torch.allclose(merged[name], want[name], rtol=1e-12, atol=0), name
