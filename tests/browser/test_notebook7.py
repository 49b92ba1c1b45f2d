"""Smoke test: the widget renders and updates in Jupyter Notebook 7 (`/notebooks/...`), served
by the same jupyter_server as Lab."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from notebook_pages import (
    LOOP_TOKENS,
    RENDER_TIMEOUT_MS,
    artifacts_dir,
    fmt_int,
    open_and_run_all,
    wait_kernel_idle,
)
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

NOTEBOOK = "nb7_widget.ipynb"


def test_widget_renders_and_updates_in_notebook7(
    jupyter_server: Any, new_page: Callable[..., Any]
) -> None:
    name = jupyter_server.copy_notebook(NOTEBOOK)
    page = new_page()
    try:
        open_and_run_all(page, jupyter_server.page_url(f"notebooks/{name}"), name)
        # Notebook 7's own shell, not Lab's.
        assert page.evaluate("() => window.jupyterapp.name") == "Jupyter Notebook"
        root = page.get_by_test_id("featmon-root")
        expect(root).to_be_visible(timeout=RENDER_TIMEOUT_MS)
        tokens = page.get_by_test_id("status-tokens")
        page.wait_for_function(  # a non-zero count (before the first snapshot it shows a dash)
            """() => Number((document.querySelector('[data-testid="status-tokens"]')
                             || {}).textContent?.replace(/,/g, "")) > 0""",
            timeout=60_000,
        )
        wait_kernel_idle(page, timeout_ms=90_000)
        expect(tokens).to_have_text(fmt_int(LOOP_TOKENS), timeout=15_000)
        expect(page.get_by_test_id("chart-frequency").locator("svg.main-svg").first).to_be_attached()
        expect(page.get_by_test_id("table-top").locator("tbody tr[data-feature]")).to_have_count(50)
        kernel = jupyter_server.kernel(name)
        assert kernel.value("monitor.state.total_tokens") == LOOP_TOKENS
        root.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir() / "widget-notebook7.png"))
    finally:
        page.context.close()
        jupyter_server.shutdown_notebook(name)
