"""Co-firing counts of 8 selected features on and off: `monitor.on_activation` (dense, fp32 and
bf16) and `on_sparse_activation` (TopK) against one read of the activations (`python -m
bench` prints them; `python -m bench.cofiring` alone)."""

from __future__ import annotations

import platform

import torch

from featmon_widget import FeatureMonitor

from .cases import Row, machine
from .timing import interleaved_medians

SELECTED = list(range(0, 8 * 97, 97))  # 8 features spread over the width


def cofiring_cases(shapes: list[tuple[int, int]], dtypes: list[torch.dtype],
                   topk: tuple[int, int, int],
                   repeat: int, device: torch.device) -> list[Row]:
    """Rows per dense shape and dtype, then the TopK path."""
    rows: list[Row] = []
    for n, f in shapes:
        for dtype in dtypes:
            rows += _dense_group(n, f, dtype, repeat, device)
    return rows + _sparse_group(*topk, repeat, device)


def _monitors(f: int, device: torch.device, **config: object) -> tuple[FeatureMonitor, ...]:
    return (FeatureMonitor(f, device=device, **config),
            FeatureMonitor(f, device=device, selected=SELECTED, **config))


def _dense_group(n: int, f: int, dtype: torch.dtype, repeat: int,
                 device: torch.device) -> list[Row]:
    gen = torch.Generator(device=device).manual_seed(0)
    acts = torch.relu(torch.randn(n, f, generator=gen, device=device) - 1.5).to(dtype)
    off, on = _monitors(f, device)
    for m in (off, on):  # steady state: every example slot full
        for _ in range(m.state.examples_per_feature):
            m.on_activation(acts)
    read, plain, counted = "one read (acts.sum(0))", "on_activation, co-firing off", \
        "on_activation, co-firing on (8 selected)"
    seconds = interleaved_medians([lambda: acts.sum(0), lambda: off.on_activation(acts),
                                   lambda: on.on_activation(acts)], repeat, 2, device)
    group = f"co-firing {n}x{f} {str(dtype).removeprefix('torch.')}"
    return [Row(group, read, seconds[0]), Row(group, plain, seconds[1], read),
            Row(group, counted, seconds[2], read),
            Row(group, "co-firing on / off", seconds[2] / seconds[1] * seconds[0], read,
                {"on_over_off": seconds[2] / seconds[1]})]


def _sparse_group(n: int, f: int, k: int, repeat: int, device: torch.device) -> list[Row]:
    gen = torch.Generator(device=device).manual_seed(k)
    values, indices = torch.topk(torch.randn(n, f, generator=gen, device=device), k, dim=1)
    values = torch.relu(values)
    off, on = _monitors(f, device, top_k=min(10, k))
    group = f"co-firing TopK {n} tok, d_sae {f}, k={k}"
    base, plain, counted = "dense read of the same tokens", "on_sparse_activation, co-firing off", \
        "on_sparse_activation, co-firing on (8 selected)"
    dense = torch.zeros(n, f, device=device).scatter_(1, indices, values)
    seconds = interleaved_medians([lambda: dense.sum(0),
                                   lambda: off.on_sparse_activation(indices, values),
                                   lambda: on.on_sparse_activation(indices, values)],
                                  repeat, 2, device)
    return [Row(group, base, seconds[0]), Row(group, plain, seconds[1], base),
            Row(group, counted, seconds[2], base),
            Row(group, "co-firing on / off", seconds[2] / seconds[1] * seconds[0], base,
                {"on_over_off": seconds[2] / seconds[1]})]


if __name__ == "__main__":
    from .__main__ import _table

    print(f"machine: {platform.machine()}, {machine()}")
    print(_table(cofiring_cases([(1024, 24576), (256, 131072)], [torch.float32, torch.bfloat16],
                                (1024, 65536, 64), 7, torch.device("cpu"))))
