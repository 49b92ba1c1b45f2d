"""A selected feature's page in Chromium, every part live: the built bundle on the plain page
of `test_fast_page`, its commands answered by a real `CommandHandler` on a monitor with a tiny
model, tokenizer and unembedding. The panel shows the distribution's quantiles (marked on the
values chart), its examples and sampled tokens grouped by activation interval with each band's
share, the promoted / suppressed tokens with their histogram, what it fires with and the test
box; clicking a co-firing feature selects it and its own page appears. The apply time of a
snapshot with every part open is measured (test-artifacts/feature-page-metrics.json) and the
page is in test-artifacts/feature-page.png."""

from __future__ import annotations

import json
import statistics
from typing import Any

import pytest
import torch
from notebook_pages import artifacts_dir
from playwright.sync_api import expect
from test_fast_page import TIMEOUT_MS, _sent, _show, page, page_url  # noqa: F401
from test_probe_box import D_MODEL, TinyLM, Words, _answer

from featmon_widget import FeatureMonitor, SparseAutoencoder
from featmon_widget.widget.commands import CommandHandler

pytestmark = pytest.mark.browser

D_SAE, VOCAB = 16, 64
TEXTS = ["the cat sat on the mat", "a dog ran in the park", "we read the old book today",
         "rain fell on the quiet town", "she wrote a long letter home"]


def recorded_monitor() -> FeatureMonitor:
    g = torch.Generator().manual_seed(1)
    sae = SparseAutoencoder.from_tensors(torch.randn(D_MODEL, D_SAE, generator=g),
                                         torch.zeros(D_SAE),
                                         torch.randn(D_SAE, D_MODEL, generator=g),
                                         torch.zeros(D_MODEL))
    monitor = FeatureMonitor.for_sae(sae, compile=False, samples_per_feature=4)
    tokenizer = Words()
    model = TinyLM().eval()
    monitor.attach(model, "layer", sae, tokenizer=tokenizer)
    monitor.set_unembedding(torch.randn(D_MODEL, VOCAB, generator=g))
    for text in TEXTS:
        tokenizer(text)  # every word known to the tokenizer, for the promoted tokens
    # The feature that fires most is selected after the fact: its distribution, examples and
    # sample cover everything since the reset; co-firing counts from now on.
    with torch.no_grad():
        for _ in range(3):
            for text in TEXTS:
                model(**tokenizer(text))
    feature = monitor.get_top_features(1, "active_count").features[0].feature_idx
    monitor.configure(selected=[feature])
    with torch.no_grad():
        for text in TEXTS:
            model(**tokenizer(text))
    return monitor


def test_a_feature_page_shows_every_part_and_a_cofiring_click_selects(page: Any) -> None:  # noqa: F811
    monitor = recorded_monitor()
    (feature,) = monitor.config.selected
    handler = CommandHandler(monitor, monitor.subscribe(lambda snapshot: None))
    try:
        snap = monitor.snapshot()
        for _ in range(8):  # apply times of a snapshot with every part open
            _show(page, snap)
        panel = page.get_by_test_id(f"panel-{feature}")
        expect(panel).to_be_visible(timeout=TIMEOUT_MS)
        dist = monitor.get_distribution(feature)
        assert dist.quantiles is not None
        expect(panel).to_contain_text("p50")
        expect(page.get_by_test_id("values-note")).to_contain_text("p50 / p90 / p99")
        bands = panel.get_by_test_id("bands")
        expect(bands).to_be_visible()
        assert bands.locator("section").count() >= 1
        expect(bands).to_contain_text("holds")
        assert panel.locator(".featmon-sampled").count() >= 1  # sampled tokens, marked
        logits = panel.get_by_test_id("logits")
        expect(logits).to_be_visible()
        expect(logits).to_contain_text("set_unembedding")
        assert logits.locator("svg").count() >= 1  # the histogram over the vocabulary
        top = monitor.get_logits(feature).top[0].token
        expect(logits).to_contain_text(top.strip())
        fires = panel.get_by_test_id("fires-with")
        expect(fires).to_be_visible()
        cofiring = monitor.get_cofiring(feature)
        assert cofiring.features, "something fires with the busiest feature"
        other = cofiring.features[0].feature
        expect(page.get_by_test_id("probe-box")).to_be_visible()
        page.screenshot(path=str(artifacts_dir() / "feature-page.png"), full_page=True)
        applied = page.evaluate("() => window.__featmonStats.lastApplyMs")
        times = [applied]
        for _ in range(7):
            _show(page, snap)
            times.append(page.evaluate("() => window.__featmonStats.lastApplyMs"))
        (artifacts_dir() / "feature-page-metrics.json").write_text(json.dumps({
            "apply_ms": times, "apply_ms_median": statistics.median(times),
            "snapshot_bytes": snap.nbytes()}))
        # A co-firing feature, clicked, is selected and gets its own page.
        fires.locator(f'li[data-feature="{other}"] button').click()
        command = _sent(page)[-1]
        assert command["type"] == "select" and command["features"] == [feature, other]
        assert _answer(page, handler)["ok"] and monitor.config.selected == (feature, other)
        _show(page, monitor.snapshot())
        expect(page.get_by_test_id(f"panel-{other}")).to_be_visible(timeout=TIMEOUT_MS)
        assert [e for e in page.console_errors if "Failed to load resource" not in e] == []
    finally:
        handler.subscription.cancel()
        monitor.close()
