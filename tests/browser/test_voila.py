"""The widget in a Voila app: it renders, updates live while the kernel records, and its
controls act on the monitor (a real `voila` server and Chromium)."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import nbformat
import pytest
from conftest import _free_port, _stop_process_group, isolated_jupyter_env, wait_until_answering
from playwright.sync_api import expect

pytestmark = pytest.mark.browser
pytest.importorskip("voila")
START_S = 90
TIMEOUT_MS = 60_000

CELLS = [
    "import threading, time, torch\nfrom featmon_widget import FeatureMonitor\n"
    "monitor = FeatureMonitor(64, compile=False, throttle_ms=50)\n"
    "monitor.on_activation(torch.randn(2, 8, 64))\n"
    "monitor.widget(table_rows=10)",
    # Keeps recording after the page is shown: the view must follow.
    "def feed():\n    for _ in range(60):\n        time.sleep(0.2)\n"
    "        monitor.on_activation(torch.randn(1, 4, 64))\n"
    "threading.Thread(target=feed, daemon=True).start()",
]
FINAL_TOKENS = 16 + 60 * 4


@pytest.fixture(scope="module")
def voila_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`voila app.ipynb` on a free loopback port, with its own Jupyter dirs."""
    base = tmp_path_factory.mktemp("voila")
    env = isolated_jupyter_env(base)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, str(base / "app.ipynb"))
    port, token = _free_port(), secrets.token_hex(8)
    cmd = [sys.executable, "-m", "voila", "app.ipynb", "--no-browser", f"--port={port}",
           "--Voila.ip=127.0.0.1", f"--token={token}", "--show_tracebacks=True"]
    log_path = base / "voila.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/?token={token}"

    def probe() -> None:
        with contextlib.suppress(urllib.error.HTTPError):  # an error status is an answer too
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2)

    try:
        wait_until_answering(proc, probe, "voila", START_S,
                             lambda: log_path.read_text(errors="replace")[-3000:])
        yield url
    finally:
        _stop_process_group(proc)


def test_the_widget_renders_updates_and_takes_commands_in_voila(new_page: Any,
                                                                 voila_app: str) -> None:
    page = new_page()
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(("http://127.0.0.1", "data:",
                                                           "blob:")) else outside.append(r.url))
    page.goto(voila_app, timeout=TIMEOUT_MS)
    root = page.get_by_test_id("featmon-root")
    expect(root).to_be_visible(timeout=TIMEOUT_MS)
    expect(root.locator('[data-testid="table-top"] tbody tr')).to_have_count(10)
    expect(root.locator('[data-testid="chart-frequency"] .main-svg').first).to_be_visible()
    # Live: the kernel keeps recording after the page is shown.
    tokens = root.get_by_test_id("status-tokens")
    expect(tokens).not_to_have_text("16", timeout=TIMEOUT_MS)
    expect(tokens).to_have_text(f"{FINAL_TOKENS:,}", timeout=TIMEOUT_MS)
    # A control acts on the monitor in the kernel and the view shows it.
    root.get_by_role("button", name="Pause").click()
    expect(root.get_by_test_id("status-enabled")).to_contain_text("paused", timeout=TIMEOUT_MS)
    # Voila's own page template asks a CDN for Font Awesome; nothing of ours leaves the server.
    assert all("fontawesome" in url for url in outside), outside
    assert not [e for e in page.console_errors if "featmon" in e.lower()], page.console_errors
