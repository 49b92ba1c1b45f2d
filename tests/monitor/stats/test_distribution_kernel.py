"""The distribution kernel's build (`stats/distribution_kernel.py`, `csrc/distributions.c`):
its block mask loops vectorize (counts are checked against numpy in
tests/monitor/record/test_distributions.py)."""

import platform
import re

import pytest
from conftest import vectorization_report

from featmon_widget.monitor.stats import backend


@pytest.mark.slow  # compiles the kernel
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 clones")
def test_block_masks_are_vectorized_in_the_avx_clones(tmp_path):
    """Per gcc's report, each row function (one per dtype, without and with the sample's
    probe, made by the ROW macro) vectorizes both its mask loops (full block, tail) in the
    x86-64-v4 and x86-64-v3 clones: scalar, the prefilter costs more than the scan it saves."""
    spec = backend.KERNELS["distributions"]
    report, lines = vectorization_report(tmp_path, "distributions")
    rows = [n for n, line in enumerate(lines, 1) if re.match(r"ROW\(row_\w+,", line)]
    assert len(rows) == 6
    for number in rows:
        counts = re.findall(rf"{spec.source}:{number}:\d+: note: vectorized (\d+) loops", report)
        assert counts.count("2") >= 2, (number, counts)
