import math

import torch

from featmon_widget.snapshot.frequency import (
    FREQUENCY_BIN_COUNT,
    FREQUENCY_EDGES,
    frequency_histogram,
)


def test_frequency_histogram_bins_log10_ratio_and_counts_never_fired_apart():
    count = torch.tensor([100, 100, 100, 0, 100])
    active = torch.tensor([100, 1, 0, 0, 10])
    hist, never_fired, never_seen = frequency_histogram(active, count)
    assert int(never_fired) == 1 and int(never_seen) == 1
    assert int(hist.sum()) == 3
    edges = FREQUENCY_EDGES.tolist()
    for ratio in (1.0, 0.01, 0.1):
        log = math.log10(ratio)
        b = min(sum(1 for e in edges[1:-1] if log >= e), FREQUENCY_BIN_COUNT - 1)
        assert hist[b] >= 1
