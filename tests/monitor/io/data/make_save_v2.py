"""Writes `save_v2/`: a save of format version 2 (tensors in `tensors.safetensors`, no digest of
the JSON), made with the code that wrote that format. Run from the repository root:
`python tests/monitor/io/data/make_save_v2.py`. `test_saving_v2` loads it."""

from pathlib import Path
from types import SimpleNamespace

import torch

from featmon_widget import FeatureMonitor
from featmon_widget.monitor.record import recording as recording_module

CLOCK = 1.8e9
D = 24


def make() -> FeatureMonitor:
    """The monitor the fixture holds (the same on every run: fixed seeds and clock)."""
    monitor = FeatureMonitor(D, compile=False, device="cpu", history_size=16, features=[1, 4],
                             selected=[2], examples_per_feature=2, context_window=2,
                             threshold=0.1)
    g = torch.Generator().manual_seed(5)
    for step in range(3):
        with monitor.request("chat"):
            monitor.on_activation(torch.randn(2, 4, D, generator=g).relu(),
                                  token_ids=torch.randint(0, 99, (2, 4), generator=g))
        indices = torch.stack([torch.randperm(D, generator=g)[:3] for _ in range(5)])
        monitor.on_sparse_activation(indices, torch.rand(5, 3, generator=g), request_id=f"t{step}")
    monitor.set_labels({1: "one"})
    return monitor


if __name__ == "__main__":
    recording_module.time = SimpleNamespace(time=lambda: CLOCK)
    make().save(Path(__file__).with_name("save_v2"))
