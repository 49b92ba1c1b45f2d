"""The widget in a real JupyterLab: live updates while a cell runs, and every control's effect
on the kernel, checked through a second client of the same kernel.

One notebook session serves the whole module (starting Lab and a kernel costs ~10 s); each test
prepares the kernel state it needs, so they also pass alone (`-k`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from notebook_pages import (
    D_SAE,
    LOOP_TOKENS,
    RENDER_TIMEOUT_MS,
    LiveObservation,
    apply_log,
    artifacts_dir,
    fmt_int,
    open_and_run_all,
    summary,
    wait_kernel_idle,
    watch_live_updates,
)
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

NOTEBOOK = "lab_widget.ipynb"
UI_TIMEOUT_MS = 15_000
SNAPSHOT_UPDATE = re.compile(rb'"method":\s*"update"')


@dataclass
class LabSession:
    page: Any
    kernel: Any
    live: LiveObservation
    live_apply_ms: list[float]
    frames: list[int] = field(default_factory=list)  # bytes of each snapshot update received

    def by_id(self, testid: str) -> Any:
        return self.page.get_by_test_id(testid)

    def state(self) -> dict:
        return self.kernel.value("monitor.state.to_dict()")

    def feed(self, steps: int) -> None:
        """Run `steps` forward passes in the kernel (each adds 16 tokens when enabled)."""
        self.kernel.run(
            f"with torch.no_grad():\n    for _ in range({steps}):\n        model(batch())"
        )

    def expect_tokens_shown(self, tokens: int) -> None:
        expect(self.by_id("status-tokens")).to_have_text(fmt_int(tokens), timeout=UI_TIMEOUT_MS)

    def ensure_recorded(self, steps: int = 3) -> int:
        """Make sure something is recorded (statistics and history); returns the token total."""
        state = self.state()
        if state["total_tokens"] == 0 or state["history_count"] == 0:
            assert state["enabled"], "recording is paused; a previous test did not resume it"
            self.feed(steps)
            state = self.state()
        self.expect_tokens_shown(state["total_tokens"])
        return state["total_tokens"]


def eventually(check: Callable[[], Any], timeout_s: float = 15, what: str = "") -> Any:
    """Poll `check` until it returns a truthy value (commands from the page and from the kernel
    client reach the kernel over different connections, so their order is not fixed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or check}")
        time.sleep(0.1)


def _record_frame(frames: list[int], payload: str | bytes) -> None:
    data = payload.encode() if isinstance(payload, str) else payload
    if b"comm_msg" in data and b'"snapshot"' in data and SNAPSHOT_UPDATE.search(data):
        frames.append(len(data))


@pytest.fixture(scope="module")
def lab(jupyter_server: Any, new_page: Callable[..., Any]) -> Any:
    name = jupyter_server.copy_notebook(NOTEBOOK)
    page = new_page()
    frames: list[int] = []
    page.on(
        "websocket",
        lambda ws: ws.on("framereceived", lambda payload: _record_frame(frames, payload)),
    )
    open_and_run_all(page, jupyter_server.page_url(f"lab/tree/{name}"), name)
    expect(page.get_by_test_id("featmon-root")).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    applies_before_loop = len(apply_log(page))
    live = watch_live_updates(page)
    wait_kernel_idle(page)
    live_ms = apply_log(page)[applies_before_loop:]
    session = LabSession(page, jupyter_server.kernel(name), live, live_ms, frames)
    yield session
    page.context.close()
    jupyter_server.shutdown_notebook(name)


def test_widget_renders_charts_and_table(lab: LabSession) -> None:
    expect(lab.by_id("featmon-root")).to_be_visible()
    for chart in ("chart-frequency", "chart-values"):
        expect(lab.by_id(chart).locator("svg.main-svg").first).to_be_attached(
            timeout=UI_TIMEOUT_MS
        )
    # The frequency chart has bars; the table has its 50 default rows of kernel-ranked features.
    expect(lab.by_id("chart-frequency").locator(".barlayer .trace").first).to_be_attached()
    rows = lab.by_id("table-top").locator("tbody tr[data-feature]")
    expect(rows).to_have_count(50, timeout=UI_TIMEOUT_MS)
    features = [int(f) for f in rows.evaluate_all("rs => rs.map(r => r.dataset.feature)")]
    assert all(0 <= f < D_SAE for f in features) and len(set(features)) == 50
    expect(lab.by_id("status-errors")).to_have_text("errors: 0")
    expect(lab.by_id("status-enabled")).to_contain_text("live")


def test_live_updates_arrive_while_the_loop_cell_runs(lab: LabSession) -> None:
    live = lab.live
    shown = [s["tokens"] for s in live.samples]
    # Only the loop cell runs forwards, so a count between 0 and the final one, seen before Run
    # All finished, arrived while the loop cell was still executing.
    assert len(live.busy_tokens) >= 3, f"token counts shown while busy: {live.busy_tokens}; {shown}"
    assert live.busy_tokens == sorted(live.busy_tokens), live.busy_tokens
    assert 0 < live.busy_tokens[0] < LOOP_TOKENS, live.busy_tokens
    assert max(live.busy_applied) > min(live.busy_applied), live.busy_applied
    expect(lab.page.locator(".jp-OutputArea-output", has_text="loop done")).to_contain_text(
        f"loop done: {LOOP_TOKENS} tokens"
    )


def test_shown_token_count_equals_the_kernels(lab: LabSession) -> None:
    total = lab.state()["total_tokens"]
    assert total >= LOOP_TOKENS
    lab.expect_tokens_shown(total)
    forwards = lab.state()["forward_passes"]
    expect(lab.by_id("status-forwards")).to_have_text(fmt_int(forwards))


def test_reset_statistics_resets_the_kernel(lab: LabSession) -> None:
    lab.ensure_recorded()
    lab.by_id("btn-reset").click()
    expect(lab.by_id("actions-message")).to_have_text(
        f"reset statistics of {D_SAE} features", timeout=UI_TIMEOUT_MS
    )
    state = lab.state()
    assert state["total_tokens"] == 0 and state["forward_passes"] == 0
    stats = lab.kernel.value(
        "(lambda s: [s.total_activations, max(f.count for f in s.features),"
        " max(f.active_count for f in s.features)])(monitor.get_statistics())"
    )
    assert stats == [0, 0, 0]
    lab.expect_tokens_shown(0)
    expect(lab.by_id("status-forwards")).to_have_text("0")


def test_invalid_configure_shows_the_kernels_error_and_changes_nothing(lab: LabSession) -> None:
    lab.ensure_recorded()
    before = lab.state()
    # Above the kernel's limit (the form only checks >= 1): the kernel rejects it.
    expected = lab.kernel.run(
        "try:\n    monitor.config.replace(monitor.d_sae, history_size=1_000_000)\n"
        "except ValueError as exc:\n    print(exc)"
    ).strip()
    assert "history_size" in expected
    lab.by_id("input-history-size").fill("1000000")
    lab.by_id("btn-apply").click()
    expect(lab.by_id("form-error")).to_have_text(expected, timeout=UI_TIMEOUT_MS)
    assert lab.state() == before

    # A feature beyond d_sae is caught in the browser; nothing reaches the kernel either.
    lab.by_id("input-history-size").fill(str(before["history_size"]))
    lab.by_id("input-features").fill("999999")
    lab.by_id("btn-apply").click()
    expect(lab.by_id("form-error")).to_contain_text(f"0..{D_SAE - 1}")
    expect(lab.by_id("input-features")).to_have_attribute("aria-invalid", "true")
    assert lab.state() == before

    # Restore the form: with nothing different from the kernel's state, nothing is sent.
    lab.by_id("input-features").fill("all")
    lab.by_id("btn-apply").click()
    expect(lab.by_id("form-message")).to_have_text("nothing to change")
    expect(lab.by_id("form-error")).to_have_text("")
    assert lab.state() == before


def test_valid_configure_reaches_the_kernel(lab: LabSession) -> None:
    assert lab.state()["top_k"] != 5
    lab.by_id("input-top-k").fill("5")
    lab.by_id("btn-apply").click()
    expect(lab.by_id("form-message")).to_have_text("applied top_k", timeout=UI_TIMEOUT_MS)
    assert lab.state()["top_k"] == 5
    lab.feed(1)  # new history records keep 5 top features
    top = lab.kernel.value("[len(r.top_k) for r in monitor.get_history(limit=16).records]")
    assert top and max(top) <= 5
    expect(lab.by_id("input-top-k")).to_have_value("5")


def test_clear_history_empties_the_kernels_history(lab: LabSession) -> None:
    lab.ensure_recorded()
    state = lab.state()
    assert state["history_count"] > 0
    expect(lab.by_id("records").locator("li").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    lab.by_id("btn-clear").click()
    expect(lab.by_id("actions-message")).to_have_text(
        f"cleared {state['history_count']} records", timeout=UI_TIMEOUT_MS
    )
    assert lab.kernel.value("monitor.get_history().total") == 0
    assert lab.state()["history_count"] == 0
    expect(lab.by_id("status-history")).to_have_text(f"0 / {fmt_int(state['history_size'])}")
    expect(lab.by_id("records").locator("li")).to_have_count(0)
    expect(lab.by_id("records-empty")).to_be_visible()
    # Statistics are kept.
    assert lab.state()["total_tokens"] == state["total_tokens"]


def test_header_ranks_in_the_kernel_and_row_selects_a_feature(lab: LabSession) -> None:
    lab.ensure_recorded()
    lab.kernel.run("monitor.configure(selected=[])")
    values = lab.by_id("chart-values")
    expect(values.locator(".barlayer .trace")).to_have_count(0, timeout=UI_TIMEOUT_MS)

    header = lab.by_id("table-top").locator('th[data-metric="max"]')
    header.locator("button").click()
    expect(header).to_have_class(re.compile(r"\bactive\b"), timeout=UI_TIMEOUT_MS)
    expect(header).to_have_attribute("aria-sort", "descending")
    ranked = lab.kernel.value(
        "[monitor.widget().snapshot['table_metric'],"
        " [f.feature_idx for f in monitor.get_top_features(k=3, metric='max').features]]"
    )
    assert ranked[0] == "max"
    rows = lab.by_id("table-top").locator("tbody tr[data-feature]")
    expect(rows.first).to_have_attribute("data-feature", str(ranked[1][0]))
    expect(rows.nth(1)).to_have_attribute("data-feature", str(ranked[1][1]))

    feature = ranked[1][0]
    row = lab.by_id("table-top").locator(f'tbody tr[data-feature="{feature}"]')
    row.locator("button").click()
    expect(row).to_have_class(re.compile(r"\bselected\b"), timeout=UI_TIMEOUT_MS)
    assert feature in lab.state()["selected_features"]
    expect(values.locator(".barlayer .trace")).to_have_count(1, timeout=UI_TIMEOUT_MS)
    expect(values.locator(".legend")).to_contain_text(f"#{feature}")


PANEL_SETUP = """
class _Words:
    def decode(self, ids):
        return f" w{ids[0]}"

monitor.reset_statistics()
monitor.tokenizer = _Words()
monitor.set_labels({7: "the seventh feature"})
_g = torch.Generator().manual_seed(3)
monitor.on_activation(torch.relu(torch.randn(3, 6, D_SAE, generator=_g)), request_id="panel",
                      token_ids=torch.arange(18).view(3, 6))
monitor.configure(selected=[7])
"""


def test_selected_feature_panel_shows_the_kernels_examples(lab: LabSession) -> None:
    """Selecting a feature shows its examples as shaded token text equal to get_examples."""
    lab.kernel.run(PANEL_SETUP)
    panel = lab.by_id("panel-7")
    expect(panel.locator("h4")).to_contain_text("the seventh feature", timeout=UI_TIMEOUT_MS)
    want = lab.kernel.value(
        "[{'tokens': e.tokens, 'index': e.index, 'acts': e.activations}"
        " for e in monitor.get_examples(7, k=5).examples]")
    rows = panel.locator(".featmon-examples > li:not(.featmon-sampled)")  # the top examples
    expect(rows).to_have_count(len(want), timeout=UI_TIMEOUT_MS)
    assert want, "feature 7 has examples"
    for i, example in enumerate(want):
        tokens = rows.nth(i).locator(".featmon-tok")
        assert tokens.all_text_contents() == example["tokens"]
        active = [t.get_attribute("class") for t in tokens.all()]
        assert [j for j, c in enumerate(active) if "active" in c] == [example["index"]]
        shaded = tokens.evaluate_all("els => els.map(e => e.style.background !== '')")
        assert shaded == [a is not None and a > 0 for a in example["acts"]]
    lab.page.screenshot(path=str(artifacts_dir() / "widget-panel.png"), full_page=True)
    lab.kernel.run("monitor.configure(selected=[]); monitor.tokenizer = None; "
                   "monitor.set_labels({})")


def test_search_box_finds_a_labelled_feature(lab: LabSession) -> None:
    lab.ensure_recorded()
    lab.kernel.run("monitor.set_labels({123: 'Semicolons in code', 321: 'colons'})")
    lab.by_id("table-search").fill("semicolon")
    rows = lab.by_id("table-top").locator("tbody tr[data-feature]")
    expect(rows).to_have_count(1, timeout=UI_TIMEOUT_MS)
    expect(rows.first).to_have_attribute("data-feature", "123")
    expect(rows.first.locator(".featmon-label")).to_have_text("Semicolons in code")
    assert lab.kernel.value("monitor.widget().subscription.search") == "semicolon"
    lab.by_id("table-search").fill("")
    expect(rows).to_have_count(50, timeout=UI_TIMEOUT_MS)
    lab.kernel.run("monitor.set_labels({})")


def test_toggle_pauses_recording_in_the_kernel(lab: LabSession) -> None:
    lab.ensure_recorded()
    toggle = lab.by_id("btn-toggle")
    expect(toggle).to_contain_text("Pause")
    toggle.click()
    expect(lab.by_id("status-enabled")).to_contain_text("paused", timeout=UI_TIMEOUT_MS)
    paused = lab.state()
    assert paused["enabled"] is False
    lab.feed(3)  # not recorded while paused
    after = lab.state()
    assert (after["total_tokens"], after["forward_passes"]) == (
        paused["total_tokens"], paused["forward_passes"])
    lab.expect_tokens_shown(paused["total_tokens"])

    expect(toggle).to_contain_text("Enable")
    toggle.click()
    expect(lab.by_id("status-enabled")).to_contain_text("live", timeout=UI_TIMEOUT_MS)
    assert lab.state()["enabled"] is True
    lab.feed(1)
    lab.expect_tokens_shown(paused["total_tokens"] + 16)


def test_screenshot_and_frontend_metrics(lab: LabSession) -> None:
    """Saves test-artifacts/widget-lab.png and reports (not asserts) message sizes and apply
    times against the goals (<= 64 KB per snapshot, <= 8 ms per apply)."""
    page = lab.page
    lab.ensure_recorded()
    selected = lab.state()["selected_features"]
    if len(selected) < 2:
        rows = lab.by_id("table-top").locator("tbody tr[data-feature]")
        for i in (1, 2):
            feature = int(rows.nth(i).get_attribute("data-feature"))
            if feature not in selected:
                rows.nth(i).locator("button").click()
                eventually(lambda f=feature: f in lab.state()["selected_features"],
                           what=f"feature {feature} selected")
    lab.feed(20)
    lab.expect_tokens_shown(lab.state()["total_tokens"])
    expect(lab.by_id("chart-values").locator(".barlayer .trace")).to_have_count(
        len(lab.state()["selected_features"]), timeout=UI_TIMEOUT_MS)

    # Apply times: snapshots whose charts change (the selected features' histograms too) ...
    n_selected = len(lab.state()["selected_features"])
    start = len(apply_log(page))
    lab.kernel.run(
        "with torch.no_grad():\n    for _ in range(20):\n        model(batch())\n"
        "        time.sleep(0.06)"
    )
    lab.expect_tokens_shown(lab.state()["total_tokens"])
    feed_ms = apply_log(page)[start:]
    # ... and snapshots with unchanged data (the charts skip their redraw).
    start = len(apply_log(page))
    lab.kernel.run("for _ in range(15):\n    monitor.widget().refresh()\n    time.sleep(0.06)")
    eventually(lambda: len(apply_log(page)) - start >= 10, what="refreshed snapshots applied")
    refresh_ms = apply_log(page)[start:]

    sizes = json.loads(lab.kernel.run(SNAPSHOT_SIZES).strip().splitlines()[-1])

    page.get_by_test_id("featmon-root").scroll_into_view_if_needed()
    out = artifacts_dir()
    page.screenshot(path=str(out / "widget-lab.png"), full_page=True)
    page.get_by_test_id("featmon-root").screenshot(path=str(out / "widget-lab-widget.png"))

    log = apply_log(page)
    metrics = {
        "where": "headless Debian Chromium in JupyterLab (software rendering), CPU-only kernel",
        "goals": {"snapshot_bytes_max": 64 * 1024, "apply_ms_median_max": 8},
        "snapshot_bytes_kernel_nbytes": sizes,
        "websocket_snapshot_update_frame_bytes": summary([float(n) for n in lab.frames]),
        "apply_ms_live_loop_cell_no_selection": summary(lab.live_apply_ms),
        f"apply_ms_live_feed_{n_selected}_selected": summary(feed_ms),
        "apply_ms_unchanged_data_refresh": summary(refresh_ms),
        "apply_ms_first_draw": round(log[0], 3) if log else None,
        "snapshots_applied": page.evaluate("() => window.__featmonStats.applied"),
        "tokens_shown_while_loop_cell_busy": lab.live.busy_tokens,
        "console_errors": page.console_errors[:20],
    }
    (out / "frontend-metrics.json").write_text(json.dumps(metrics, indent=2))
    print("\nfrontend metrics:", json.dumps(metrics, indent=2))


SNAPSHOT_SIZES = """
import json as _json
import torch as _torch
_w = monitor.widget()
_worst = FeatureMonitor.for_sae(sae, compile=False, top_k=64, features=list(range(0, 512, 2)),
                                selected=list(range(1, 16, 2)))
with _torch.no_grad():
    for _ in range(10):
        _worst.on_activation(sae.encode(_torch.nn.functional.gelu(model.embed(batch()))))
_sizes = {
    "displayed_options": list(_w._subscription.options()),
    "displayed": monitor.snapshot(*_w._subscription.options()).nbytes(),
    "table200_records50": monitor.snapshot(200, "mean", 50).nbytes(),
    "worst_table200_records50_selected8_explicit256": _worst.snapshot(200, "mean", 50).nbytes(),
}
_worst.close()
print(_json.dumps(_sizes))
"""
