"""Past one machine: two gloo ranks under torchrun sync, rank 0 serves, and a client sees both
ranks' counts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for

from featmon_widget.serve import RemoteMonitor

WORKER = Path(__file__).with_name("serve_worker.py")


@pytest.mark.distributed
def test_a_client_of_rank_0_sees_both_ranks(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(WORKER), str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        assert wait_for(lambda: (tmp_path / "url").exists() or proc.poll() is not None, 240)
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        with RemoteMonitor((tmp_path / "url").read_text(), token="rank0-secret") as remote:
            state = remote.state
            assert state.synced_ranks == 2 and state.total_tokens == 2 + 3
            row = remote.get_statistics([0]).features[0]
            assert row.count == 5 and row.mean == pytest.approx((2 * 1 + 3 * 2) / 5, rel=1e-12)
            assert row.min == 1.0 and row.max == 2.0
    finally:
        (tmp_path / "done").write_text("")
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
