
import torch

from featmon_widget.monitor.record.features import DenseFeatures
from featmon_widget.monitor.record.histograms import VALUE_BIN_COUNT, ValueHistograms


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
