"""Regenerate the README's and the docs' picture of the live widget from the browser tests.

Runs the browser test that executes the quickstart notebook in a real JupyterLab (the demo
model streaming two thousand sentences, the strongest features' panels open;
`tests/browser/test_quickstart.py`, which installs Chromium when it is missing), then copies its
widget-only screenshot into `docs/images/widget.png`.

    .venv/bin/python scripts/screenshot.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/browser/test_quickstart.py"
SHOT = ROOT / "test-artifacts" / "quickstart-widget.png"
TARGET = ROOT / "docs" / "images" / "widget.png"


def main() -> int:
    """Run the browser test and copy its screenshot; returns the process exit code."""
    SHOT.unlink(missing_ok=True)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", TEST], cwd=ROOT)
    if result.returncode != 0 or not SHOT.exists():
        print(f"the browser test failed or wrote no {SHOT.name}", file=sys.stderr)
        return result.returncode or 1
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SHOT, TARGET)
    print(f"wrote {TARGET.relative_to(ROOT)} ({TARGET.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
