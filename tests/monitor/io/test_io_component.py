"""`Sharing` on its own, with a stand-in for the live delivery: a save made through one
component restores into another monitor's (recording, labels and request numbering), the load
settings follow the save, exports read the recording it was given, and a sync tells listeners."""

import pytest
import torch

from featmon_widget import FeatureMonitor
from featmon_widget.monitor.io import component
from featmon_widget.monitor.io.component import Sharing

D = 10


class FakeLive:
    """What `Sharing` uses of `LiveDelivery`: events."""

    def __init__(self):
        self.events = []

    def emit(self, event):
        self.events.append(event)


def sharing_of(monitor):
    live = FakeLive()
    return Sharing(monitor._lock, monitor._recording, monitor._attached, monitor._requests,
                   live), live


def test_save_and_restore_through_the_component(tmp_path):
    monitor = FeatureMonitor(D, device="cpu", history_size=7, threshold=0.25)
    monitor.on_activation(torch.rand(2, 3, D))
    monitor.on_activation(torch.rand(4, D))  # an automatic request: auto-1
    monitor.set_labels({3: "three"})
    sharing, _ = sharing_of(monitor)
    assert sharing.save(tmp_path / "saved") == tmp_path / "saved"

    saved = Sharing.read(tmp_path / "saved")
    settings = Sharing.settings(saved, None)
    assert settings["d_sae"] == D and settings["history_size"] == 7
    assert settings["threshold"] == 0.25 and settings["device"] == torch.device("cpu")
    assert Sharing.settings(saved, "meta")["device"] == "meta"  # a device given wins

    restored = FeatureMonitor(**settings)
    sharing_of(restored)[0].restore(saved)
    assert restored.get_statistics() == monitor.get_statistics()
    assert restored.get_history(100) == monitor.get_history(100)
    assert restored.get_examples(3).label == "three"
    assert restored.current_request() == monitor.current_request()


def test_a_save_before_any_activation_follows_the_next_device(tmp_path):
    FeatureMonitor(D).save(tmp_path / "empty")
    assert Sharing.settings(Sharing.read(tmp_path / "empty"), None)["device"] is None


def test_exports_read_the_given_recording(tmp_path):
    monitor = FeatureMonitor(D)
    acts = torch.zeros(4, D)
    acts[:, 1] = 1.0
    monitor.on_activation(acts)
    sharing, _ = sharing_of(monitor)
    written = sharing.export_sparsity(tmp_path)
    assert written.name == "sparsity.safetensors"
    page = Sharing.to_html(monitor.snapshot(), tmp_path / "page.html")
    assert page.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    pytest.importorskip("pandas")
    frame = sharing.history_frame()
    assert len(frame) == 4


def test_sync_merges_then_tells_listeners(monkeypatch):
    monitor = FeatureMonitor(D)
    sharing, live = sharing_of(monitor)
    calls = []
    monkeypatch.setattr(component, "sync_recording",
                        lambda recording, lock, group: calls.append((recording, lock, group)))
    assert sharing.sync("group") is None
    assert calls == [(monitor._recording, monitor._lock, "group")]
    assert live.events == ["synced"]
