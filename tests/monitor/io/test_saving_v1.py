"""A save of format version 1 (`data/save_v1`, made by `data/make_save_v1.py` with the code that
wrote that format) loads bit for bit: the same tensors, the same answers, and after the same
next batch the same tensors and answers as the monitor that saved it had."""

import importlib.util
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from featmon_widget import FeatureMonitor, SparseAutoencoder
from featmon_widget.monitor.io import saving
from featmon_widget.monitor.record import recording as recording_module
from featmon_widget.monitor.record.recording import Recording
from featmon_widget.monitor.stats.kernels import StatisticsKernels

DATA = Path(__file__).with_name("data")
_spec = importlib.util.spec_from_file_location("make_save_v1", DATA / "make_save_v1.py")
maker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(maker)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def assert_holds(monitor: FeatureMonitor, folder: Path, same_cpu_kind: bool = True) -> None:
    """`monitor` holds exactly what the version-1 save in `folder` holds. After a new batch
    (`same_cpu_kind=False`), float sums made by a matmul (the SAE's encode and decode for the
    health sums) round as this CPU's BLAS does, which differs between AVX2 and AVX-512 machines
    in the last bits: those are compared to 1e-6, everything else bit for bit."""
    want = saving.read_save(folder)
    assert want.meta["read_from_format_version"] == 1
    got = saving.recording_state(monitor._recording, 0, {}, None)
    # Parts newer than version 1 start as a new monitor's do (empty).
    made = Recording(monitor.d_sae, monitor.config, monitor.device, StatisticsKernels(False, False))
    fresh = saving.recording_state(made, 0, {}, None)
    for part in monitor._recording.state_parts():
        if part.since_format > 1:
            for name in [n for n in got.tensors if n.startswith(part.name + ".")]:
                now = got.tensors.pop(name)  # after a new batch it holds that batch only
                assert not same_cpu_kind or torch.equal(bits(now), bits(fresh.tensors[name])), name
            got.meta["parts"].pop(part.name)
    # The old selected-only value histograms are checked, then left out (format 4 keeps every
    # feature's distribution instead; the part "values" stays, empty).
    want.tensors.pop("values.counts")
    assert got.tensors.keys() == want.tensors.keys()
    for name, tensor in want.tensors.items():
        assert got.tensors[name].dtype == tensor.dtype, name
        if same_cpu_kind or not tensor.is_floating_point() or not name.startswith("health."):
            assert torch.equal(bits(got.tensors[name]), bits(tensor)), name
        else:
            torch.testing.assert_close(got.tensors[name], tensor, rtol=1e-6, atol=0)
    assert got.meta["parts"] == want.meta["parts"]


def assert_answers(monitor: FeatureMonitor, expected: dict[str, str]) -> None:
    got = maker.results(monitor)
    assert got.keys() == expected.keys()
    for key, text in expected.items():
        if key == "state":  # fields added to MonitorState later are not the save's
            state, want = json.loads(got[key]), json.loads(text)
            assert {k: state[k] for k in want} == want
        elif key == "health":
            # The version that wrote the fixture divided the L0 numerator (with the other
            # rank's counts) by this rank's tokens only; the other rank's (its tokens, as
            # version 1 kept no active tokens) now join the denominator.
            health, want = json.loads(got[key]), json.loads(text)
            theirs = monitor._recording.remote.tokens
            tokens, mine = health.pop("tokens"), want.pop("tokens")
            assert tokens == mine + theirs
            l0 = want.pop("l0_mean") * mine / tokens
            assert health.pop("l0_mean") == pytest.approx(l0, rel=1e-12)
            # The reconstruction figures come from a matmul: CPU kinds round them apart.
            assert same_answer(health, want, rel=1e-6)
        elif key in ("statistics", "statistics_all", "top_features"):
            # Rows gained `top_tokens` after the fixture (derived from the examples, not saved).
            rows = json.loads(got[key])
            for row in rows["features"]:
                row.pop("top_tokens")
            assert same_answer(rows, json.loads(text)), key
        else:
            answer = _parsed(got[key])
            if key.startswith("examples"):  # responses gained `kind` after the fixture
                assert answer.pop("kind") == "top"
            assert got[key] == text or same_answer(answer, _parsed(text)), key


def _parsed(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def same_answer(got, want, rel: float = 1e-15) -> bool:
    """Equal, but a derived float (std = sqrt(M2 / (n - 1)), a ratio) may differ in its last
    bit between CPUs (torch's vector paths for AVX2 and AVX-512); the tensors themselves are
    compared bit for bit by `assert_holds`."""
    if isinstance(want, float) and isinstance(got, float):
        return got == pytest.approx(want, rel=rel, abs=0)
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(same_answer(got[k], want[k], rel) for k in want)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(
            same_answer(g, w, rel) for g, w in zip(got, want, strict=True))
    return got == want


def test_a_version_1_save_loads_bit_for_bit_and_rounds_on_alike(monkeypatch):
    monkeypatch.setattr(recording_module, "time", SimpleNamespace(time=lambda: maker.CLOCK))
    expected = json.loads((DATA / "save_v1_expected.json").read_text(encoding="utf-8"))
    loaded = FeatureMonitor.load(DATA / "save_v1", compile=False)
    assert loaded.state.synced_ranks == 2  # the remote view came back too
    assert_holds(loaded, DATA / "save_v1")
    assert_answers(loaded, expected["before"])
    batch = load_file(str(DATA / "save_v1_next.safetensors"))
    sae = SparseAutoencoder.from_tensors(*(batch[f"sae.{n}"]
                                           for n in ("W_enc", "b_enc", "W_dec", "b_dec")))
    maker.feed(loaded, batch, sae, 3)
    assert_holds(loaded, DATA / "save_v1_after", same_cpu_kind=False)
    assert_answers(loaded, expected["after"])


def edit_v1(folder: Path, change) -> None:
    meta = json.loads((folder / "monitor.json").read_text())
    change(meta)
    (folder / "monitor.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(positions=["x" * 300]), "request_id"),
    (lambda m: m.update(remote={"tokens": 1}), "'remote' entry"),
    (lambda m: m.pop("tails"), "'tails' is missing"),
    (lambda m: m["health"].update(d_in=-1), "'health' entry is malformed"),
    (lambda m: m["history"].update(next_code="7"), "request names"),
])
def test_a_corrupt_version_1_save_is_a_clear_error(tmp_path, change, message):
    shutil.copytree(DATA / "save_v1", tmp_path / "save")
    edit_v1(tmp_path / "save", change)
    with pytest.raises(ValueError, match=message):
        FeatureMonitor.load(tmp_path / "save", compile=False)
