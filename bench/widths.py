"""Wide SAEs: a top-10 query, a snapshot and a TopK update at growing d_sae, each against one
pass over the statistics themselves (summing 8 float64 arrays of d_sae), with the monitor's
memory per feature."""

from __future__ import annotations

import torch

from featmon_widget import FeatureMonitor

from .cases import Row
from .timing import interleaved_medians

TOKENS, K = 1024, 64


def width_cases(widths: list[int], repeat: int) -> list[Row]:
    """The rows of every width in `widths` (CPU)."""
    rows: list[Row] = []
    for d_sae in widths:
        rows += _width_group(d_sae, repeat)
    return rows


def _width_group(d_sae: int, repeat: int) -> list[Row]:
    monitor = FeatureMonitor(d_sae, compile=False)
    g = torch.Generator().manual_seed(0)
    indices = torch.randint(0, d_sae, (TOKENS, K), generator=g)
    values = torch.rand(TOKENS, K, generator=g) * 4
    for _ in range(4):  # warm: every part allocated, examples filled
        monitor.on_sparse_activation(indices, values)
    totals = monitor._recording.stats.totals
    arrays = [t.to(torch.float64) if t.dtype != torch.float64 else t for t in totals]

    def one_pass() -> None:
        sum(float(a.sum()) for a in arrays)

    def update_and_merge() -> None:
        monitor.on_sparse_activation(indices, values)
        monitor._recording.stats.flush()  # the held TopK values merged: the whole update

    cases = {
        "one pass over the statistics (8 float64 arrays)": one_pass,
        "get_top_features(k=10)": lambda: monitor.get_top_features(10),
        "snapshot()": monitor.snapshot,
        f"sparse update, {TOKENS} tok x k={K}": lambda: monitor.on_sparse_activation(indices,
                                                                                    values),
        "sparse update + merge into the totals": update_and_merge,
    }
    seconds = dict(zip(cases, interleaved_medians(list(cases.values()), repeat, 2),
                       strict=True))
    state = monitor.state
    snapshot_bytes = monitor.snapshot().nbytes()
    per_feature = {part: round(b / d_sae, 1) for part, b in state.memory_bytes.items() if b}
    group = f"d_sae {d_sae:,}"
    base = "one pass over the statistics (8 float64 arrays)"
    monitor.close()
    return [
        Row(group, base, seconds[base], None,
            {"bytes_per_feature": per_feature,
             "total_bytes_per_feature": round(state.device_bytes / d_sae, 1)}),
        *(Row(group, name, seconds[name], base,
              {"bytes": snapshot_bytes} if name == "snapshot()" else None)
          for name in list(cases)[1:]),
    ]
