import math

import torch

from featmon_widget.monitor.stats.scans import SCAN_BINS
from featmon_widget.snapshot.frequency import (
    ACTIVE_SUM,
    FIRING_SUMMARY_SIZE,
    FREQUENCY_BIN_COUNT,
    FREQUENCY_EDGES,
    FREQUENCY_THRESHOLDS,
    NEVER_FIRED,
    NEVER_SEEN,
    ULTRA_RARE,
)


def test_thresholds_are_the_inner_edges_as_ratios():
    edges = FREQUENCY_EDGES.tolist()
    assert len(edges) == FREQUENCY_BIN_COUNT + 1 and edges[0] == -8.0 and edges[-1] == 0.0
    assert FREQUENCY_THRESHOLDS.dtype == torch.float64
    assert FREQUENCY_THRESHOLDS.tolist() == [10.0 ** e for e in edges[1:-1]]
    assert all(math.isclose(math.log10(t), e, abs_tol=1e-15)
               for t, e in zip(FREQUENCY_THRESHOLDS.tolist(), edges[1:-1], strict=True))
    assert torch.all(FREQUENCY_THRESHOLDS[1:] > FREQUENCY_THRESHOLDS[:-1])


def test_summary_layout_follows_the_bins_and_matches_the_compiled_scan():
    assert SCAN_BINS == FREQUENCY_BIN_COUNT
    layout = [NEVER_FIRED, NEVER_SEEN, ULTRA_RARE, ACTIVE_SUM]
    assert layout == list(range(FREQUENCY_BIN_COUNT, FIRING_SUMMARY_SIZE))
