"""The sample of activating tokens riding on the statistics pass (one read for both; see
monitor/stats/sample_probe.py) against the separate passes: `monitor.on_activation` (dense,
CPU) with samples on / off and distributions on / off, as multiples of one read of the
activations (`acts.sum(0)`), all interleaved round by round in one process (the machine is
noisy): the median of each, and the spread (25th..75th percentile) of the per-round ratios.

    python -m bench.fused [repeats]
"""

from __future__ import annotations

import platform
import statistics
import sys
import time

import torch

from featmon_widget import FeatureMonitor

from .cases import machine

CASES = {  # name: (samples_per_feature, distributions, fused)
    "samples off, distributions off": (0, False, True),
    "samples on, distributions off": (2, False, True),
    "samples off, distributions on": (0, True, True),
    "samples on, distributions on, separate passes": (2, True, False),
    "samples on, distributions on, fused (one read)": (2, True, True),
}


def run(n: int, f: int, dtype: torch.dtype, repeat: int) -> None:
    gen = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(n, f, generator=gen) - 1.5).to(dtype)
    monitors = []
    for samples, dists, fused in CASES.values():
        m = FeatureMonitor(f, samples_per_feature=samples, distributions=dists)
        m._recording.fuse_samples = fused
        for _ in range(4):  # steady state: every slot full
            m.on_activation(acts)
        monitors.append(m)
    fns = [lambda: acts.sum(0), *[lambda m=m: m.on_activation(acts) for m in monitors]]
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    read = statistics.median(times[0])
    print(f"{n}x{f} {str(dtype).removeprefix('torch.')}: one read {read * 1e3:.1f} ms")
    for name, t in zip(CASES, times[1:], strict=True):
        ratios = sorted(a / r for a, r in zip(t, times[0], strict=True))
        q = statistics.quantiles(ratios, n=4)
        print(f"  {name:48s} {statistics.median(t) / read:5.2f}x read "
              f"(per round {q[0]:.2f}..{q[2]:.2f})")


if __name__ == "__main__":
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    print(f"machine: {platform.machine()}, {machine()}")
    for shape in ((1024, 24576), (256, 131072)):
        for dt in (torch.float32, torch.bfloat16):
            run(*shape, dt, reps)
