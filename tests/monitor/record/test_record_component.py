"""`Intake` on its own: a pass pokes the delivery once (none while recording is off, none for
bad input), configuration changes reach the delivery's interval and are announced only when
valid, and a reset counts the monitored features."""

import pytest
import torch

from featmon_widget import FeatureMonitor
from featmon_widget.monitor.record.component import Intake, initial_config

D = 8


class FakeLive:
    """What `Intake` uses of `LiveDelivery`: pokes, events and the delivery interval."""

    def __init__(self):
        self.pokes, self.events, self.intervals = 0, [], []

    def poke(self):
        self.pokes += 1

    def emit(self, event):
        self.events.append(event)

    def set_interval(self, interval_s):
        self.intervals.append(interval_s)


def intake_of(monitor):
    live = FakeLive()
    return Intake(monitor._lock, monitor._recording, monitor._ingest, monitor._requests,
                  live), live


def test_passes_are_recorded_and_poke_once():
    monitor = FeatureMonitor(D)
    intake, live = intake_of(monitor)
    intake.on_activation(torch.rand(3, D))
    intake.on_sparse_activation(torch.tensor([[1, 2]]), torch.tensor([[0.5, 0.7]]))
    assert live.pokes == 2 and monitor.state.total_tokens == 4
    with pytest.raises(ValueError):
        intake.on_activation(torch.rand(3, D + 1))
    assert live.pokes == 2 and monitor.state.total_tokens == 4
    with intake.request("chat"):
        assert intake.current_request() == "chat"
    intake.configure(enabled=False)
    intake.on_activation(torch.rand(3, D))
    intake.encode_and_record(None, torch.rand(3, D), "r")  # off: the SAE is never touched
    assert live.pokes == 2 and monitor.state.total_tokens == 4


def test_configuration_changes_are_checked_then_announced():
    monitor = FeatureMonitor(D)
    intake, live = intake_of(monitor)
    intake.configure(throttle_ms=250.0, features=[1, 3])
    assert live.intervals == [0.25] and live.events == ["configured"]
    with pytest.raises(ValueError):
        intake.configure(history_size=-1)
    assert live.events == ["configured"] and monitor.config.features == (1, 3)
    assert intake.reset_statistics() == 2
    intake.configure(features=None)
    assert intake.reset_statistics() == D
    assert intake.clear_history() == 0
    assert live.events == ["configured", "statistics_reset", "configured", "statistics_reset",
                           "history_cleared"]


@pytest.mark.parametrize("d_sae", [0, -1, 2.0, True, "8"])
def test_initial_config_checks_the_width_first(d_sae):
    with pytest.raises(ValueError, match="d_sae"):
        initial_config(d_sae, None, history_size=-1)


def test_initial_config_defaults_top_k_to_the_width_when_narrower():
    assert initial_config(4, None).top_k == 4
    assert initial_config(40, None).top_k == 10
    assert initial_config(40, 3).top_k == 3
