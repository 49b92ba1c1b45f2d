"""The firing-frequency histogram across features (log10 active ratio) and the layout of the
firing summary it is read from (one device tensor a snapshot computes once and shares with the
health strip: see `monitor/firing.py`)."""

from __future__ import annotations

import torch

# Firing frequency (active_ratio) across features, as log10: bins of 0.25 decade from 1e-8 to 1.
# Never-fired features are counted apart; ratios below 1e-8 land in the first bin.
FREQUENCY_LOG10_RANGE = (-8.0, 0.0)
FREQUENCY_BIN_COUNT = 32
FREQUENCY_EDGES = torch.linspace(*FREQUENCY_LOG10_RANGE, FREQUENCY_BIN_COUNT + 1,
                                 dtype=torch.float64)
# The inner edges as ratios: a ratio r goes to the bin "how many of these are <= r" (comparing
# ratios, not their rounded logarithms, so that every path bins a ratio the same way).
FREQUENCY_THRESHOLDS = torch.tensor([10.0 ** e for e in FREQUENCY_EDGES[1:-1].tolist()],
                                    dtype=torch.float64)

# The firing summary, int64 [FIRING_SUMMARY_SIZE]: the histogram's bins (fired features only),
# then these counts over all features.
NEVER_FIRED = FREQUENCY_BIN_COUNT  # seen, never above the threshold
NEVER_SEEN = FREQUENCY_BIN_COUNT + 1  # no value recorded
ULTRA_RARE = FREQUENCY_BIN_COUNT + 2  # fired, on fewer than `rare_floor` of the values seen
ACTIVE_SUM = FREQUENCY_BIN_COUNT + 3  # values above the threshold, all features together
FIRING_SUMMARY_SIZE = FREQUENCY_BIN_COUNT + 4
