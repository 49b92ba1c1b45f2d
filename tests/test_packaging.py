"""The wheel carries the built frontend (it is git-ignored, so only the build hook and the
`artifacts` setting put it there), and the bundle stays within its size budget."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_BUDGET = 1_300_000


def test_installed_bundle_exists_and_is_within_budget():
    js = ROOT / "featmon_widget" / "static" / "widget.js"
    css = ROOT / "featmon_widget" / "static" / "widget.css"
    assert js.is_file() and css.is_file()
    assert js.stat().st_size <= BUNDLE_BUDGET, js.stat().st_size
    assert "plotly" in js.read_text(errors="ignore").lower()  # bundled, no CDN at run time


@pytest.mark.packaging
def test_built_wheel_contains_the_frontend(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )
    (wheel,) = tmp_path.glob("featmon_widget-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "featmon_widget/static/widget.js" in names
    assert "featmon_widget/static/widget.css" in names
    assert "featmon_widget/monitor/feature_monitor.py" in names
    assert "featmon_widget/monitor/stats/csrc/sparse_accumulate.c" in names  # built on first use
