"""The test box round trip in Chromium: the built bundle on the plain page of
`test_fast_page`, its commands answered by a real `CommandHandler` on a monitor with a tiny
model attached. Type a text, the kernel probes it (nothing recorded), the tokens come back
shaded; hovering a token lists its top features; clicking one selects it (its panel appears).
Screenshot in test-artifacts/probe-box.png."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from notebook_pages import artifacts_dir
from playwright.sync_api import expect
from test_fast_page import TIMEOUT_MS, _sent, _show, _wire, page, page_url  # noqa: F401

from featmon_widget import FeatureMonitor, SparseAutoencoder
from featmon_widget.widget.commands import CommandHandler

pytestmark = pytest.mark.browser

D_MODEL, D_SAE = 8, 16


class TinyLM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embed = torch.nn.Embedding(64, D_MODEL)
        self.embed.weight.data = torch.randn(64, D_MODEL, generator=g)
        self.layer = torch.nn.Linear(D_MODEL, D_MODEL)

    def forward(self, input_ids: torch.Tensor, attention_mask: Any = None) -> torch.Tensor:
        return self.layer(self.embed(input_ids))


class Words:
    """One token per word (id: a hash of the word), decoded back to the word."""

    def __init__(self) -> None:
        self.words: dict[int, str] = {}

    def __call__(self, text: str, return_tensors: Any = None) -> dict[str, torch.Tensor]:
        ids = []
        for i, word in enumerate(text.split()):
            token = sum(map(ord, word)) % 64
            self.words[token] = (" " if i else "") + word
            ids.append(token)
        return {"input_ids": torch.tensor([ids])}

    def decode(self, ids: list[int]) -> str:
        return "".join(self.words.get(i, f"<{i}>") for i in ids)


def _answer(on: Any, handler: CommandHandler) -> dict[str, Any]:
    """Answer the last command of the page `on` as the kernel would; returns the reply."""
    command = _sent(on)[-1]
    reply = handler.reply(command)
    on.evaluate("r => window.featmonPage.model.emit('msg:custom', r, [])", _wire(reply))
    return reply


def test_test_box_round_trip(page: Any) -> None:  # noqa: F811  (the fixture)
    g = torch.Generator().manual_seed(1)
    sae = SparseAutoencoder.from_tensors(torch.randn(D_MODEL, D_SAE, generator=g),
                                         torch.zeros(D_SAE),
                                         torch.randn(D_SAE, D_MODEL, generator=g),
                                         torch.zeros(D_MODEL))
    monitor = FeatureMonitor.for_sae(sae, compile=False, selected=[2])
    monitor.attach(TinyLM().eval(), "layer", sae, tokenizer=Words())
    handler = CommandHandler(monitor, monitor.subscribe(lambda snapshot: None))
    try:
        _show(page, monitor.snapshot())
        box = page.get_by_test_id("probe-box")
        expect(box).to_be_visible()
        page.get_by_test_id("probe-text").fill("the cat sat on the mat")
        page.get_by_test_id("probe-run").click()
        reply = _answer(page, handler)
        assert reply["ok"] and reply["data"]["feature"] == 2
        tokens = page.get_by_test_id("probe-tokens").locator(".featmon-tok")
        expect(tokens).to_have_count(6)
        words = [t.strip() for t in tokens.all_text_contents()]
        assert words == ["the", "cat", "sat", "on", "the", "mat"]
        assert monitor.state.total_tokens == 0  # probed, not recorded
        # The strongest token of feature 2 is shaded.
        values = reply["data"]["values"]
        best = max(range(6), key=lambda i: values[i] or 0)
        if (values[best] or 0) > 0:
            assert tokens.nth(best).evaluate("t => t.style.background") != ""
        # Hover the token with the most top features: its list appears.
        top = reply["data"]["top"]
        richest = max(range(6), key=lambda i: len(top[i]))
        assert top[richest], "the tiny SAE fires somewhere"
        tokens.nth(richest).hover()
        items = page.get_by_test_id("probe-top").locator("li")
        expect(items).to_have_count(len(top[richest]))
        feature = top[richest][0][0]
        page.screenshot(path=str(artifacts_dir() / "probe-box.png"), full_page=True)
        tokens.nth(richest).click()  # pin it, then click its first feature
        page.get_by_test_id("probe-top").locator(f'button[data-feature="{feature}"]').click()
        command = _sent(page)[-1]
        assert command["type"] == "select" and feature in command["features"]
        assert _answer(page, handler)["ok"]
        assert feature in monitor.config.selected
        _show(page, monitor.snapshot())
        expect(page.get_by_test_id(f"panel-{feature}")).to_be_visible(timeout=TIMEOUT_MS)
        # (the plain page has no favicon: its 404 is not the widget's)
        assert [e for e in page.console_errors if "Failed to load resource" not in e] == []
    finally:
        handler.subscription.cancel()
        monitor.close()
