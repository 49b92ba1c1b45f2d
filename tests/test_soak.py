"""Host memory stays flat under default use (forwards outside any request,
history on, a subscriber receiving snapshots). Was: RSS 410 -> 616 MB over 6.1M tokens."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.soak
@pytest.mark.slow
def test_five_million_tokens_keep_resident_memory_flat():
    result = subprocess.run([sys.executable, "-m", "bench.soak", "--tokens", "5000000"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads(result.stdout.strip().splitlines()[-1])
    assert run["tokens"] >= 5_000_000 - 1024
    assert run["snapshots"] > 0
    assert run["growth_after_warmup_pct"] <= 2.0, run
