"""Fast checks of the built bundle in Chromium without Jupyter: a plain page imports
featmon_widget/static/widget.js and renders it on a fake anywidget model that is fed real
snapshots made by a FeatureMonitor in this process. Also measures the apply time of the
frontend alone (no Lab, no kernel competing for the CPU); reported, not asserted.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from notebook_pages import REPO, apply_log, artifacts_dir, fmt_int, summary
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

STATIC = REPO / "featmon_widget" / "static"
D_SAE = 512
TIMEOUT_MS = 15_000

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>featmon page</title>
<link rel="stylesheet" href="widget.css"></head>
<body><div id="host" style="width: 1200px"></div>
<script type="module">
import widget from "./widget.js";

const handlers = new Map();
const model = {
  state: { snapshot: {} },
  sent: [],
  get(key) { return this.state[key]; },
  set(key, value) { this.state[key] = value; this.emit(`change:${key}`); },
  on(event, cb) {
    if (!handlers.has(event)) handlers.set(event, new Set());
    handlers.get(event).add(cb);
  },
  off(event, cb) {
    if (!event) handlers.clear();
    else if (!cb) handlers.delete(event);
    else handlers.get(event)?.delete(cb);
  },
  emit(event, ...args) { for (const cb of [...(handlers.get(event) ?? [])]) cb(...args); },
  save_changes() {},
  send(content) { this.sent.push(content); },
};

// Bytes arrive as {"__b64__": "..."}: turn them into DataViews, as the widget manager does.
function revive(value) {
  if (Array.isArray(value)) return value.map(revive);
  if (value && typeof value === "object") {
    if (typeof value.__b64__ === "string") {
      const raw = atob(value.__b64__);
      const bytes = new Uint8Array(raw.length);
      for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
      return new DataView(bytes.buffer);
    }
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, revive(v)]));
  }
  return value;
}

const controller = new AbortController();
window.featmonPage = {
  model,
  setSnapshot(message) { model.set("snapshot", revive(message)); },
  reply(id, ok, message, error) {
    model.emit("msg:custom", { type: "reply", id, ok, message, error }, []);
  },
  cleanup: widget.render({ model, el: document.getElementById("host"),
                           signal: controller.signal }),
};
</script></body></html>
"""


def _wire(value: Any) -> Any:
    """A snapshot message as JSON: bytes become {"__b64__": ...}."""
    if isinstance(value, bytes):
        return {"__b64__": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wire(v) for v in value]
    return value


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The page and a copy of the built bundle, served over loopback http (not file://:
    Chromium refuses module imports from origin null)."""
    bundle = STATIC / "widget.js"
    if not bundle.exists():
        pytest.fail(f"{bundle} is missing: run `npm run build` first", pytrace=False)
    root = tmp_path_factory.mktemp("page")
    for name in ("widget.js", "widget.css"):
        shutil.copyfile(STATIC / name, root / name)
    (root / "index.html").write_text(PAGE)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def monitor() -> Iterator[Any]:
    import torch

    from featmon_widget import FeatureMonitor

    torch.manual_seed(0)
    m = FeatureMonitor(D_SAE, compile=False, features=[3, 5, 7])
    m.feed = lambda steps=1: [  # random sparse activations: [2 sequences, 8 tokens, d_sae]
        m.on_activation(torch.relu(torch.randn(2, 8, D_SAE) - 1.0)) for _ in range(steps)
    ]
    yield m
    m.close()


@pytest.fixture
def page(new_page: Callable[..., Any], page_url: str) -> Iterator[Any]:
    page = new_page(1300, 1100)
    page.goto(page_url)
    page.wait_for_function("() => !!window.featmonPage", timeout=TIMEOUT_MS)
    yield page
    page.context.close()


def _show(page: Any, snap: Any) -> None:
    """Hand `snap` to the page and wait until it has been applied."""
    before = page.evaluate("() => window.__featmonStats.applied")
    page.evaluate("m => window.featmonPage.setSnapshot(m)", _wire(snap.to_message()))
    page.wait_for_function(f"() => window.__featmonStats.applied > {before}", timeout=TIMEOUT_MS)


def _sent(page: Any) -> list[dict]:
    return page.evaluate("() => window.featmonPage.model.sent")


def test_page_renders_a_monitor_snapshot(page: Any, monitor: Any) -> None:
    expect(page.get_by_test_id("featmon-root")).to_be_visible()
    expect(page.get_by_test_id("status-enabled")).to_have_text("waiting")
    monitor.feed(3)
    _show(page, monitor.snapshot())
    expect(page.get_by_test_id("status-tokens")).to_have_text(fmt_int(48))
    rows = page.get_by_test_id("table-top").locator("tbody tr[data-feature]")
    expect(rows).to_have_count(3)  # the three monitored features
    top = monitor.get_top_features(k=3).features
    assert rows.evaluate_all("rs => rs.map(r => Number(r.dataset.feature))") == [
        f.feature_idx for f in top
    ]
    expect(page.get_by_test_id("chart-frequency").locator("svg.main-svg").first).to_be_attached()
    expect(page.get_by_test_id("records").locator("li")).to_have_count(20)


def test_page_sends_commands_and_shows_replies(page: Any, monitor: Any) -> None:
    monitor.feed(1)
    _show(page, monitor.snapshot())
    page.get_by_test_id("btn-reset").click()
    sent = _sent(page)[-1]
    assert sent["type"] == "reset_statistics" and isinstance(sent["id"], int)
    page.evaluate("id => window.featmonPage.reply(id, false, '', 'no: refused')", sent["id"])
    expect(page.get_by_test_id("actions-error")).to_have_text("no: refused")

    page.get_by_test_id("table-top").locator('th[data-metric="max"] button').click()
    assert {k: v for k, v in _sent(page)[-1].items() if k != "id"} == {
        "type": "rank", "metric": "max"}

    page.get_by_test_id("input-top-k").fill("4")
    page.get_by_test_id("btn-apply").click()
    sent = _sent(page)[-1]
    assert sent["type"] == "configure" and sent["changes"] == {"top_k": 4}
    page.evaluate("id => window.featmonPage.reply(id, true, 'applied top_k', null)", sent["id"])
    expect(page.get_by_test_id("form-message")).to_have_text("applied top_k")

    count = len(_sent(page))
    page.get_by_test_id("input-features").fill("999999")
    page.get_by_test_id("btn-apply").click()
    expect(page.get_by_test_id("form-error")).to_contain_text(f"0..{D_SAE - 1}")
    assert len(_sent(page)) == count  # caught in the browser: nothing sent


def _million_features(page: Any) -> dict[str, Any]:
    """A 1,048,576-feature TopK monitor's snapshots: within the 64 KB budget (asserted), and
    their apply time (reported)."""
    import torch

    from featmon_widget import FeatureMonitor

    wide = FeatureMonitor(1 << 20, compile=False, selected=list(range(8)))
    g = torch.Generator().manual_seed(0)

    def feed() -> None:
        indices = torch.randint(0, 1 << 20, (2, 256, 64), generator=g)
        indices[..., :8] = torch.arange(8)  # the selected features fire too
        wide.on_sparse_activation(indices, torch.rand(2, 256, 64, generator=g) * 4)

    feed()
    _show(page, wide.snapshot())
    start = len(apply_log(page))
    sizes = []
    for _ in range(8):
        feed()
        snap = wide.snapshot()
        sizes.append(snap.nbytes())
        _show(page, snap)
    wide.close()
    assert max(sizes) <= 64 * 1024, sizes
    return {"bytes": max(sizes), "apply_ms": summary(apply_log(page)[start:])}


def test_page_apply_time(page: Any, monitor: Any) -> None:
    """The frontend alone, on snapshots whose data changes every time (all charts redraw)."""
    monitor.configure(features=None)
    results: dict[str, Any] = {}
    cases = [
        ("rows50_records20_no_selection", (), 50, 20),
        ("rows50_records20_selected8", tuple(range(8)), 50, 20),
        ("rows200_records50_selected8", tuple(range(8)), 200, 50),
    ]
    for name, selected, rows, records in cases:
        monitor.configure(selected=list(selected))
        monitor.feed(2)
        _show(page, monitor.snapshot(rows, "mean", records))  # first draw of this shape
        start = len(apply_log(page))
        for _ in range(8):
            monitor.feed(1)
            _show(page, monitor.snapshot(rows, "mean", records))
        results[name] = {"bytes": monitor.snapshot(rows, "mean", records).nbytes(),
                         "apply_ms": summary(apply_log(page)[start:])}
    results["d_sae_1048576_rows50_records20_selected8"] = _million_features(page)
    start = len(apply_log(page))
    for _ in range(8):  # same data, new sequence: the charts skip their redraw
        _show(page, monitor.snapshot(200, "mean", 50))
    results["rows200_records50_selected8_unchanged_data"] = {
        "apply_ms": summary(apply_log(page)[start:])}
    expect(page.get_by_test_id("chart-values").locator(".barlayer .trace")).to_have_count(8)
    out = artifacts_dir() / "frontend-metrics-page.json"
    out.write_text(json.dumps({"where": "plain page, headless Chromium, no Jupyter",
                               "goal_apply_ms_median_max": 8, **results}, indent=2))
    print("\nplain-page apply times:", json.dumps(results, indent=2))

