"""What the number of watches costs a forward: 1 against 100 (and 1,000) single-feature watches,
recorded in one batched pass. Run `python -m bench.watches`; it prints the ratio."""

from __future__ import annotations

import argparse

import torch

from featmon_widget import FeatureMonitor

from .timing import interleaved_medians


def watch_forwards(counts: list[int], tokens: int, d_sae: int, repeat: int,
                   device: torch.device) -> dict[int, float]:
    """Median seconds of one `on_activation` with each number of watches in `counts`."""
    acts = torch.relu(torch.randn(tokens, d_sae, device=device) - 1.0)
    monitors = []
    for count in counts:
        monitor = FeatureMonitor(d_sae, device=device, compile=False, examples_per_feature=0,
                                 health_every=0)
        for feature in range(count):
            monitor.watch(feature % d_sae, above=3.0)
        monitor.on_activation(acts)  # warm
        monitors.append(monitor)

    def forward(monitor: FeatureMonitor):
        return lambda: monitor.on_activation(acts)

    seconds = interleaved_medians([forward(m) for m in monitors], repeat, 2, device)
    for monitor in monitors:
        monitor.close()
    return dict(zip(counts, seconds, strict=True))


def main() -> None:
    """Print the forward time per number of watches and its ratio to one watch."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    counts = [1, 100, 1000]
    seconds = watch_forwards(counts, args.tokens, args.d_sae, args.repeat,
                             torch.device(args.device))
    for count in counts:
        print(f"{count:>5} watches: {seconds[count] * 1e3:8.2f} ms per forward, "
              f"{seconds[count] / seconds[1]:6.2f}x one watch")


if __name__ == "__main__":
    main()
