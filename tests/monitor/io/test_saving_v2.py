"""A save of format version 2 (`data/save_v2`, made by `data/make_save_v2.py` with the code that
wrote that format: `tensors.safetensors`, no digest of the JSON) still loads, bit for bit."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import torch

from featmon_widget import FeatureMonitor
from featmon_widget.monitor.io import saving
from featmon_widget.monitor.record import recording as recording_module

DATA = Path(__file__).with_name("data")
_spec = importlib.util.spec_from_file_location("make_save_v2", DATA / "make_save_v2.py")
maker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(maker)


def assert_identical(a: FeatureMonitor, b: FeatureMonitor, newer_parts: bool = True) -> None:
    """`a` and `b` hold the same; without `newer_parts`, parts a version-2 save does not hold
    (they start empty in a loaded monitor) are left out."""
    ta = saving.recording_state(a._recording, 0, {}, None)
    tb = saving.recording_state(b._recording, 0, {}, None)
    if not newer_parts:
        for part in a._recording.state_parts():
            if part.since_format > 2:
                for state in (ta, tb):
                    state.meta["parts"].pop(part.name)
                    for name in [n for n in state.tensors if n.startswith(part.name + ".")]:
                        state.tensors.pop(name)
    assert ta.tensors.keys() == tb.tensors.keys()
    for name, tensor in ta.tensors.items():
        assert torch.equal(tensor.reshape(-1).view(torch.uint8),
                           tb.tensors[name].reshape(-1).view(torch.uint8)), name
    assert ta.meta["parts"] == tb.meta["parts"]
    assert a.get_statistics() == b.get_statistics()
    assert a.get_history(1000) == b.get_history(1000)
    assert [a.get_examples(f) for f in range(maker.D)] == [b.get_examples(f)
                                                           for f in range(maker.D)]


def test_a_version_2_save_loads_bit_for_bit(monkeypatch, tmp_path):
    monkeypatch.setattr(recording_module, "time", SimpleNamespace(time=lambda: maker.CLOCK))
    loaded = FeatureMonitor.load(DATA / "save_v2", compile=False)
    assert_identical(loaded, maker.make(), newer_parts=False)
    assert loaded.get_examples(1).label == "one"
    # Saved again, it is written in the current format and loads the same.
    loaded.save(tmp_path)
    assert_identical(FeatureMonitor.load(tmp_path, compile=False), loaded)
