"""Driving a notebook page (JupyterLab or Notebook 7) that shows the widget."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = REPO / "test-artifacts"

# Steps of the notebook's loop cell and the tokens each adds (tests/browser/live_widget.ipynb).
LOOP_STEPS = 50
TOKENS_PER_STEP = 2 * 8
LOOP_TOKENS = LOOP_STEPS * TOKENS_PER_STEP
D_SAE = 512

OPEN_TIMEOUT_MS = 90_000
RENDER_TIMEOUT_MS = 90_000

# Opens the app's notebook panel for `path`, waits for its kernel, then starts "Run All" without
# waiting for it (the test watches the page while the cells run). Works in Lab and Notebook 7.
RUN_ALL_JS = """
async ([path, timeoutMs]) => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const deadline = Date.now() + timeoutMs;
  const app = window.jupyterapp;
  await app.restored;
  let panel = null;
  while (!panel) {
    const w = app.shell.currentWidget;
    if (w && w.context && w.context.path === path && w.sessionContext) panel = w;
    else if (Date.now() > deadline) throw new Error(`notebook ${path} did not open`);
    else await sleep(100);
  }
  await panel.context.ready;
  await panel.sessionContext.ready;
  for (;;) {
    const k = panel.sessionContext.session && panel.sessionContext.session.kernel;
    if (k && k.connectionStatus === "connected" && k.status === "idle") break;
    if (Date.now() > deadline) throw new Error(`the kernel of ${path} did not become idle`);
    await sleep(100);
  }
  window.__featmonPanel = panel;
  window.__featmonRunAll = "running";
  app.commands.execute("notebook:run-all-cells").then(
    () => { window.__featmonRunAll = "done"; },
    (err) => { window.__featmonRunAll = `failed: ${err}`; },
  );
}
"""

# One atomic look at the page: the shown token count, snapshots applied and the kernel status.
SAMPLE_JS = """
() => {
  const panel = window.__featmonPanel;
  const kernel = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;
  const tokens = document.querySelector('[data-testid="status-tokens"]');
  const stats = window.__featmonStats || { applied: 0 };
  return {
    t: performance.now(),
    tokens: tokens ? tokens.textContent : null,
    applied: stats.applied,
    kernel: kernel ? kernel.status : null,
    runAll: window.__featmonRunAll || null,
  };
}
"""


def fmt_int(value: int) -> str:
    """The widget's integer format (thousands separators)."""
    return f"{value:,}"


def parse_int(text: str | None) -> int | None:
    if text is None:
        return None
    digits = text.replace(",", "").strip()
    return int(digits) if digits.isdigit() else None


def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def open_and_run_all(page: Any, url: str, path: str) -> None:
    """Open `url` (a Lab or Notebook 7 page of notebook `path`) and start running every cell."""
    page.goto(url, wait_until="domcontentloaded", timeout=OPEN_TIMEOUT_MS)
    page.wait_for_function("() => !!window.jupyterapp", timeout=OPEN_TIMEOUT_MS)
    page.evaluate(RUN_ALL_JS, [path, OPEN_TIMEOUT_MS])


def kernel_status(page: Any) -> str | None:
    return page.evaluate(SAMPLE_JS)["kernel"]


def wait_kernel_idle(page: Any, timeout_ms: float = 60_000) -> None:
    """Wait until Run All has finished and the page's kernel is idle."""
    page.wait_for_function(
        """() => {
          const p = window.__featmonPanel;
          const k = p && p.sessionContext.session && p.sessionContext.session.kernel;
          return window.__featmonRunAll !== "running" && k && k.status === "idle";
        }""",
        timeout=timeout_ms,
    )
    outcome = page.evaluate("() => window.__featmonRunAll")
    assert outcome == "done", f"Run All did not finish: {outcome}"


@dataclass
class LiveObservation:
    """What the page showed while the loop cell ran."""

    samples: list[dict]
    busy_tokens: list[int]  # distinct positive token counts shown while the cells were running
    busy_applied: list[int]  # window.__featmonStats.applied values seen meanwhile


def watch_live_updates(page: Any, timeout_s: float = 90, every_s: float = 0.05) -> LiveObservation:
    """Sample the page until Run All has finished and the kernel is idle.

    The kernel is briefly idle between cells too (e.g. after the set-up cell has already shown
    tokens), so idleness alone does not mean the loop cell is done."""
    samples: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sample = page.evaluate(SAMPLE_JS)
        samples.append(sample)
        shown = parse_int(sample["tokens"])
        if shown and sample["kernel"] == "idle" and sample["runAll"] != "running":
            break
        time.sleep(every_s)
    # "While the cell runs" = before Run All's promise resolved (it resolves only after the
    # last cell finished). The kernel status shown by the page is not a reliable signal: it
    # can read "idle" while the loop cell still executes.
    busy = [s for s in samples if s["runAll"] == "running" and parse_int(s["tokens"])]
    tokens: list[int] = []
    for s in busy:
        value = parse_int(s["tokens"])
        if value is not None and (not tokens or value != tokens[-1]):
            tokens.append(value)
    return LiveObservation(samples, tokens, [s["applied"] for s in busy])


def apply_log(page: Any) -> list[float]:
    """Duration (ms) of every snapshot apply on the page, in order."""
    return page.evaluate("() => Array.from(window.__featmonApplyLog || [])")


def summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "median": None, "p90": None, "max": None}
    ordered = sorted(values)
    return {
        "n": len(values),
        "median": round(statistics.median(ordered), 3),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 3),
        "max": round(ordered[-1], 3),
    }
