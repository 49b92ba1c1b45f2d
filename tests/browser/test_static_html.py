"""Static HTML with the widget, offline: `monitor.to_html`, and a notebook saved with widget
state exported by `jupyter nbconvert --to html` (with our preprocessor) and `featmon
export-html`, opened in Chromium with every network request refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from playwright.sync_api import expect

from featmon_widget import FeatureMonitor

pytestmark = pytest.mark.browser
TIMEOUT_MS = 20_000
PREPROCESSOR = "featmon_widget.widget.notebook_export.StaticMonitorWidgets"
STATIC_ERROR = "this is a saved snapshot: the controls need a running kernel"


def offline(page: Any) -> list[str]:
    """Refuse every request that would leave the page's own file; returns those refused."""
    refused: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith(("file:", "blob:", "data:")):
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return refused


def assert_draws_the_snapshot(page: Any, tokens: int, features: int) -> None:
    view = page.get_by_test_id("static-view").first
    expect(view.get_by_test_id("status-tokens")).to_have_text(f"{tokens:,}", timeout=TIMEOUT_MS)
    expect(view.locator('[data-testid="table-top"] tbody tr')).to_have_count(features)
    expect(view.locator('[data-testid="chart-frequency"] .main-svg').first).to_be_visible()
    expect(view.locator('[data-testid="chart-values"] .main-svg').first).to_be_visible()
    view.locator('th[data-metric="max"] button').click()
    expect(view.get_by_test_id("table-error")).to_have_text(STATIC_ERROR)
    expect(page.get_by_test_id("static-note").first).to_contain_text("Saved snapshot of")


def test_to_html_draws_the_snapshot_offline(new_page: Any, tmp_path: Path) -> None:
    monitor = FeatureMonitor(64, compile=False, selected=[3])
    monitor.on_activation(torch.randn(4, 10, 64, generator=torch.Generator().manual_seed(0)))
    path = monitor.to_html(tmp_path / "snapshot.html", table_rows=20)
    page = new_page()
    refused = offline(page)
    page.goto(path.as_uri())
    assert_draws_the_snapshot(page, 40, 20)
    assert refused == [] and page.console_errors == []


NOTEBOOK = [
    "import torch\nfrom featmon_widget import FeatureMonitor\n"
    "monitor = FeatureMonitor(64, compile=False, selected=[5])\n"
    "g = torch.Generator().manual_seed(1)\n"
    "monitor.on_activation(torch.randn(2, 8, 64, generator=g))\n"
    "widget = monitor.widget(table_rows=10)\nwidget",
    "monitor.on_activation(torch.randn(3, 8, 64, generator=g))\nwidget.refresh()",
]


@pytest.fixture(scope="module")
def executed_notebook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A notebook run by nbclient, which saves the widget state as JupyterLab does."""
    folder = tmp_path_factory.mktemp("static-nb")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in NOTEBOOK])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(folder)}}).execute()
    path = folder / "monitor.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_the_notebook_saved_the_widget_state(executed_notebook: Path) -> None:
    from featmon_widget.widget.notebook_export import saved_snapshots

    metadata = json.loads(executed_notebook.read_text())["metadata"]
    (snapshot,) = saved_snapshots(metadata).values()
    assert snapshot["state"]["total_tokens"] == 40  # the last snapshot: both cells


@pytest.mark.parametrize("how", ["nbconvert", "featmon"])
def test_exported_notebook_draws_the_last_snapshot_offline(new_page: Any, how: str,
                                                           executed_notebook: Path) -> None:
    out = executed_notebook.with_name(f"by-{how}.html")
    bin_dir = Path(sys.executable).parent
    if how == "nbconvert":
        command = [str(bin_dir / "jupyter"), "nbconvert", "--to", "html",
                   f"--HTMLExporter.preprocessors={json.dumps([PREPROCESSOR])}",
                   "--output", out.stem, str(executed_notebook)]
    else:
        command = [str(bin_dir / "featmon"), "export-html", str(executed_notebook), "-o",
                   str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    page = new_page()
    offline(page)
    page.goto(out.as_uri())
    assert_draws_the_snapshot(page, 40, 10)
    # nbconvert's page asks a CDN for require.js and the widget manager (refused here); the
    # monitor widget draws without them, and nothing of ours fails.
    assert not [e for e in page.console_errors if "featmon" in e.lower()], page.console_errors
