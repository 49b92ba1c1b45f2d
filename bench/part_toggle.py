"""One recorded part on and off: `monitor.on_activation` (dense, fp32 and bf16) and
`on_sparse_activation` (TopK) against one read of the activations, everything else at its
defaults. The two monitors run alternately within each repeat (off, on, off, ...), so machine
noise falls on both. `bench.distributions` and `bench.samples` name the part."""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any

import torch

from featmon_widget import FeatureMonitor

from .cases import Row, machine
from .timing import interleaved_medians

SHAPES = [(1024, 24576), (4096, 24576), (256, 131072)]


def part_cases(part: str, off: dict[str, Any], shapes: list[tuple[int, int]],
               dtypes: list[torch.dtype], topk: tuple[int, int, int], repeat: int,
               device: torch.device) -> list[Row]:
    """Rows per dense shape and dtype, then the TopK path, for `part` (a monitor with the
    settings `off` has it off; the other has the defaults)."""
    rows: list[Row] = []
    for n, f in shapes:
        for dtype in dtypes:
            gen = torch.Generator(device=device).manual_seed(0)
            acts = torch.relu(torch.randn(n, f, generator=gen, device=device) - 1.5).to(dtype)
            rows += _group(part, off, f"{part} {n}x{f} {str(dtype).removeprefix('torch.')}",
                           "one read (acts.sum(0))", lambda a=acts: a.sum(0), f,
                           lambda m, a=acts: m.on_activation(a), "on_activation", repeat,
                           device)
    n, f, k = topk
    gen = torch.Generator(device=device).manual_seed(k)
    values, indices = torch.topk(torch.randn(n, f, generator=gen, device=device), k, dim=1)
    values = torch.relu(values)
    dense = torch.zeros(n, f, device=device).scatter_(1, indices, values)
    return rows + _group(part, off, f"{part} TopK {n} tok, d_sae {f}, k={k}",
                         "dense read of the same tokens", lambda: dense.sum(0), f,
                         lambda m: m.on_sparse_activation(indices, values),
                         "on_sparse_activation", repeat, device, top_k=min(10, k))


def _group(part: str, off_config: dict[str, Any], group: str, base: str,
           read: Callable[[], Any], f: int, feed: Callable[[FeatureMonitor], Any], what: str,
           repeat: int, device: torch.device, **config: Any) -> list[Row]:
    off = FeatureMonitor(f, device=device, **off_config, **config)
    on = FeatureMonitor(f, device=device, **config)
    for m in (off, on):  # steady state: every example and sample slot full
        for _ in range(m.state.examples_per_feature):
            feed(m)
    seconds = interleaved_medians([read, lambda: feed(off), lambda: feed(on)], repeat, 2,
                                  device)
    return [Row(group, base, seconds[0]),
            Row(group, f"{what}, {part} off", seconds[1], base),
            Row(group, f"{what}, {part} on", seconds[2], base),
            Row(group, f"{part} on / off", seconds[2] / seconds[1] * seconds[0], base,
                {"on_over_off": seconds[2] / seconds[1]})]


def main(part: str, off: dict[str, Any]) -> None:
    """Print the part's table at the bench shapes on the CPU."""
    from .__main__ import _table

    print(f"machine: {platform.machine()}, {machine()}")
    print(_table(part_cases(part, off, SHAPES, [torch.float32, torch.bfloat16],
                            (1024, 65536, 64), 7, torch.device("cpu"))))
