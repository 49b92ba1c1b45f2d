"""The "promotes / suppresses" part of the selected features' panels: what `get_logits` says,
compact, read from its cache (computed once per feature and unembedding, never per snapshot),
left out without an unembedding, and within the panels' budget and the 64 KB snapshot."""

import json

import pytest
import torch

from featmon_widget import FeatureMonitor, SparseAutoencoder
from featmon_widget.monitor.query import logits as logits_module
from featmon_widget.snapshot.build import fit_snapshot
from featmon_widget.snapshot.logits_part import drop_logits, keep_logit_tokens, logits_part
from featmon_widget.snapshot.options import (
    PANEL_LOGIT_TOKEN_CHARS,
    PANEL_LOGITS,
    PANEL_LOGITS_BYTES,
)

D_MODEL, D_SAE, VOCAB = 16, 64, 300


class _Words:
    def decode(self, ids):
        return f" word{ids[-1]}"


def monitor(selected=(3, 9), vocab=VOCAB, tokenizer=None) -> FeatureMonitor:
    g = torch.Generator().manual_seed(0)
    sae = SparseAutoencoder.from_tensors(
        torch.randn(D_MODEL, D_SAE, generator=g), torch.zeros(D_SAE),
        torch.randn(D_SAE, D_MODEL, generator=g), torch.zeros(D_MODEL))
    m = FeatureMonitor.for_sae(sae, selected=list(selected), compile=False)
    if tokenizer is not None:
        m.tokenizer = tokenizer
    m.set_unembedding(torch.randn(D_MODEL, vocab, generator=g))
    m.on_activation(torch.relu(torch.randn(4, 10, D_SAE, generator=g)),
                    token_ids=torch.randint(0, vocab, (4, 10), generator=g))
    return m


def test_panels_say_what_each_selected_feature_promotes_as_get_logits_does():
    m = monitor(tokenizer=_Words())
    panels = m.snapshot().feature_panels
    assert [p["feature"] for p in panels] == [3, 9]
    for panel in panels:
        want = m.get_logits(panel["feature"], k=PANEL_LOGITS)
        got = panel["logits"]
        assert got["source"] == "set_unembedding" == want.source
        for side in ("top", "bottom"):
            assert [(i, text) for i, text, _ in got[side]] == [
                (t.token_id, t.token) for t in getattr(want, side)]
            assert [v for _, _, v in got[side]] == pytest.approx(
                [t.value for t in getattr(want, side)], rel=1e-3)
        assert got["counts"] == want.counts and sum(got["counts"]) == VOCAB
        assert [got["lo"], got["hi"]] == pytest.approx([want.edges[0], want.edges[-1]],
                                                       rel=1e-5)
    assert panels[0]["logits"]["top"][0][1] == f" word{panels[0]['logits']['top'][0][0]}"


def test_without_an_unembedding_panels_have_no_logits_part():
    m = FeatureMonitor(D_SAE, selected=[1, 2])  # no SAE, no model
    m.on_activation(torch.rand(3, D_SAE))
    assert all("logits" not in p for p in m.snapshot().feature_panels)
    m = monitor()
    m.set_unembedding(torch.ones(D_MODEL + 1, 4))  # does not fit the SAE: left out, no error
    assert all("logits" not in p for p in m.snapshot().feature_panels)
    m.set_unembedding(torch.ones(D_MODEL, 4))
    assert all("logits" in p for p in m.snapshot().feature_panels)  # the panels hear of it


def test_computed_once_per_feature_and_unembedding_never_per_snapshot(monkeypatch):
    calls = []
    original = logits_module.feature_logits

    def spy(row, w_u, *args, **kwargs):
        calls.append(row)
        return original(row, w_u, *args, **kwargs)

    monkeypatch.setattr(logits_module, "feature_logits", spy)
    m = monitor(selected=(3, 9))
    for _ in range(5):
        m.snapshot()
        m.on_activation(torch.rand(2, D_SAE))
    assert len(calls) == 2
    m.configure(selected=[3, 9, 20])
    m.snapshot()
    m.get_logits(20)
    assert len(calls) == 3  # only the newly selected one; get_logits reads the same cache
    m.set_unembedding(torch.randn(D_MODEL, 50))
    m.snapshot()
    m.snapshot()
    assert len(calls) == 6


def test_the_part_is_compact():
    m = monitor(tokenizer=type("T", (), {"decode": lambda self, ids: "\u2603" * 40})())
    part = logits_part(m.get_logits(3, k=10))
    assert len(part["top"]) == len(part["bottom"]) == PANEL_LOGITS
    assert all(len(text) == PANEL_LOGIT_TOKEN_CHARS and text.endswith("…")
               for _, text, _ in part["top"] + part["bottom"])
    assert len(json.dumps(part, ensure_ascii=False).encode()) < 1_000
    panels = [{"logits": part}, {"examples": []}, {"logits": dict(part)}]
    keep_logit_tokens(panels, 2)
    assert len(panels[0]["logits"]["top"]) == len(panels[2]["logits"]["bottom"]) == 2
    assert drop_logits(panels) and "logits" not in panels[2] and "logits" in panels[0]
    assert drop_logits(panels) and not drop_logits(panels)


def test_eight_ordinary_panels_keep_their_logits_and_examples():
    m = monitor(selected=range(8), vocab=50_000, tokenizer=_Words())
    m.set_labels({f: f"an ordinary label of feature {f}" for f in range(D_SAE)})
    gen = torch.Generator().manual_seed(1)
    m.on_activation(torch.relu(torch.randn(16, 20, D_SAE, generator=gen)),
                    token_ids=torch.randint(0, 5000, (16, 20), generator=gen))
    panels = m.snapshot().feature_panels
    assert all(len(p["logits"]["top"]) == PANEL_LOGITS for p in panels)
    assert all(len(p["examples"]) >= 1 for p in panels)
    assert all(len(p["examples"]) >= 2 for p in panels)  # as many as without logits
    size = len(json.dumps([p["logits"] for p in panels], ensure_ascii=False).encode())
    assert size <= PANEL_LOGITS_BYTES


def test_fit_snapshot_drops_logits_parts_until_it_fits():
    m = monitor(selected=range(8), tokenizer=_Words())
    snap = m.snapshot()
    assert all("logits" in p for p in snap.feature_panels)
    whole = snap.nbytes()
    one = len(json.dumps(snap.feature_panels[-1]["logits"], ensure_ascii=False).encode())
    fit_snapshot(snap, whole - 1)
    assert [("logits" in p) for p in snap.feature_panels] == [True] * 7 + [False]
    assert whole - one - 20 <= snap.nbytes() < whole
    fit_snapshot(snap, 0)  # nothing else is dropped
    assert not any("logits" in p for p in snap.feature_panels)
    assert all("examples" in p for p in snap.feature_panels)
