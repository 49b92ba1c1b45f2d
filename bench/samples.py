"""The sample of activating tokens on and off: `monitor.on_activation` (dense, fp32 and bf16)
and `on_sparse_activation` (TopK) against one read of the activations, everything else at its
defaults (`python -m bench` prints them; `python -m bench.samples` alone). The monitors run
interleaved (off, on, off, ... within each repeat), as the machine is noisy."""

from __future__ import annotations

import platform

import torch

from featmon_widget import FeatureMonitor

from .cases import Row, machine
from .timing import interleaved_medians


def samples_cases(shapes: list[tuple[int, int]], dtypes: list[torch.dtype],
                  topk: tuple[int, int, int], repeat: int, device: torch.device) -> list[Row]:
    """Rows per dense shape and dtype, then the TopK path."""
    rows: list[Row] = []
    for n, f in shapes:
        for dtype in dtypes:
            gen = torch.Generator(device=device).manual_seed(0)
            acts = torch.relu(torch.randn(n, f, generator=gen, device=device) - 1.5).to(dtype)
            rows += _group(f"samples {n}x{f} {str(dtype).removeprefix('torch.')}",
                           "one read (acts.sum(0))", lambda a=acts: a.sum(0), f, device,
                           lambda m, a=acts: m.on_activation(a), repeat)
    n, f, k = topk
    gen = torch.Generator(device=device).manual_seed(k)
    values, indices = torch.topk(torch.randn(n, f, generator=gen, device=device), k, dim=1)
    values = torch.relu(values)
    dense = torch.zeros(n, f, device=device).scatter_(1, indices, values)
    return rows + _group(f"samples TopK {n} tok, d_sae {f}, k={k}",
                         "dense read of the same tokens", lambda: dense.sum(0), f, device,
                         lambda m: m.on_sparse_activation(indices, values), repeat,
                         top_k=min(10, k))


def _group(group: str, base: str, read, f: int, device: torch.device, feed, repeat: int,
           **config: object) -> list[Row]:
    off = FeatureMonitor(f, device=device, samples_per_feature=0, **config)
    on = FeatureMonitor(f, device=device, **config)  # the default: 2 samples a feature
    for m in (off, on):  # steady state: every example and sample slot full
        for _ in range(m.state.examples_per_feature):
            feed(m)
    plain, sampled = "monitor, samples off", "monitor, samples on (2 a feature)"
    seconds = interleaved_medians([read, lambda: feed(off), lambda: feed(on)], repeat, 2,
                                  device)
    return [Row(group, base, seconds[0]), Row(group, plain, seconds[1], base),
            Row(group, sampled, seconds[2], base),
            Row(group, "samples on / off", seconds[2] / seconds[1] * seconds[0], base,
                {"on_over_off": seconds[2] / seconds[1]})]


if __name__ == "__main__":
    from .__main__ import _table

    print(f"machine: {platform.machine()}, {machine()}")
    print(_table(samples_cases([(1024, 24576), (4096, 24576), (256, 131072)],
                               [torch.float32, torch.bfloat16], (1024, 65536, 64), 7,
                               torch.device("cpu"))))
