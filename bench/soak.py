"""A soak run: many forwards through one monitor, sampling the process's resident memory.

`python -m bench.soak [--tokens 5000000] [--d-sae 4096] [--batch 1024]` feeds dense features
in batches of `--batch` tokens, outside any `request()` block (every forward a fresh `auto-N`
id, the default use), with the history on and a subscriber receiving snapshots; prints the RSS
at the start, after warm-up (a tenth of the run) and at the end, and the growth after warm-up.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from featmon_widget import FeatureMonitor


def rss_bytes() -> int:
    """Resident set size of this process (Linux; 0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def soak(tokens: int, d_sae: int, batch: int, seed: int = 0) -> dict[str, float]:
    """Run the soak; RSS in MB at start / after warm-up / end, growth after warm-up (%), and
    the snapshots the subscriber received."""
    gen = torch.Generator().manual_seed(seed)
    pool = [torch.relu(torch.randn(batch, d_sae, generator=gen) - 1.5) for _ in range(8)]
    monitor = FeatureMonitor(d_sae, throttle_ms=20)
    received = []
    monitor.subscribe(lambda snapshot: received.append(snapshot.sequence))
    start = rss_bytes()
    steps = max(1, tokens // batch)
    warm = rss = start
    for step in range(steps):
        monitor.on_activation(pool[step % len(pool)])
        if step == steps // 10:
            warm = rss_bytes()
    rss = rss_bytes()
    monitor.close()
    mb = 1 / 2**20
    return {"tokens": steps * batch, "start_mb": start * mb, "warm_mb": warm * mb,
            "end_mb": rss * mb, "growth_after_warmup_pct": 100 * (rss - warm) / max(warm, 1),
            "snapshots": len(received)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=5_000_000)
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=1024)
    args = parser.parse_args()
    print(json.dumps(soak(args.tokens, args.d_sae, args.batch)))


if __name__ == "__main__":
    main()
