import math

import torch

from featmon_widget.monitor.features import DenseFeatures
from featmon_widget.monitor.histograms import VALUE_BIN_COUNT, ValueHistograms
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


def test_value_histograms_count_inactive_and_log_bins_excluding_padding_and_nan():
    h = ValueHistograms((0, 2), torch.device("cpu"))
    acts = torch.tensor([[0.0, 9.0, 1.0], [0.5, 9.0, float("nan")], [2.0, 9.0, 1e9],
                         [7.0, 9.0, 7.0]])
    valid = torch.tensor([True, True, True, False])
    h.update(DenseFeatures(acts), valid, threshold=0.0)
    counts = h.counts
    assert counts.shape == (2, VALUE_BIN_COUNT)
    assert counts[0].sum() == 3 and counts[1].sum() == 2  # NaN and the padded row left out
    assert counts[0, 0] == 1  # the inactive 0.0
    assert counts[1, -1] == 1  # 1e9 lands in the last (open-ended) bin
    # 1.0 = 2^0: bin 1 + (0 - (-8)) * 4 = 33
    assert counts[1, 33] == 1
