"""Hooks on a TransformerLens `HookedTransformer` (tiny, random): outputs identical, positions per
request, `generate` (which skips the model pre-hook), attention masks and input tokens."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from hook_reference import (
    D_MODEL,
    D_SAE,
    TL_HOOK,
    Capture,
    assert_records_match,
    assert_statistics_match,
    check_monitored_run,
    make_sae,
    positions_by_row,
)
from torch import nn

from featmon_widget import FeatureMonitor


@pytest.fixture(scope="module")
def tl_model() -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tl = pytest.importorskip("transformer_lens")
        config = tl.HookedTransformerConfig(
            n_layers=1, d_model=D_MODEL, n_ctx=32, d_head=8, n_heads=4, d_vocab=50,
            act_fn="relu", attn_only=False, seed=0, device="cpu",
        )
        return tl.HookedTransformer(config).eval()


@pytest.fixture
def tl_tokens() -> torch.Tensor:
    return torch.randint(1, 50, (2, 5), generator=torch.Generator().manual_seed(3))


def test_tl_outputs_identical_and_positions(tl_model: nn.Module, tl_tokens: torch.Tensor) -> None:
    with torch.no_grad():
        ref_logits = tl_model(tl_tokens)
    sae = make_sae("ours")
    monitor = FeatureMonitor(D_SAE, compile=False)
    capture = Capture(tl_model, TL_HOOK)
    try:
        with monitor.attach(tl_model, TL_HOOK, sae), torch.no_grad():
            logits = tl_model(tl_tokens)
    finally:
        capture.remove()
    assert torch.equal(logits, ref_logits)
    records = monitor.get_history(limit=1000).records
    assert len(records) == 10
    assert len({r.request_id for r in records}) == 1
    assert re.fullmatch(r"auto-\d+", records[0].request_id)
    assert positions_by_row(records) == {0: list(range(5)), 1: list(range(5))}
    ref, by_pos = capture.features(sae)
    assert_records_match(records, by_pos)
    assert_statistics_match(monitor, ref)


def test_tl_request_continues_positions(tl_model: nn.Module, tl_tokens: torch.Tensor) -> None:
    sae = make_sae("foreign")
    monitor = FeatureMonitor(D_SAE, compile=False)
    capture = Capture(tl_model, TL_HOOK)
    try:
        with monitor.attach(tl_model, TL_HOOK, sae), torch.no_grad():
            with monitor.request("tl"):
                tl_model(tl_tokens)
                tl_model(tl_tokens[:, :3])
            tl_model(tl_tokens)  # outside the request: a fresh id, positions from 0
    finally:
        capture.remove()
    hist = monitor.get_history(limit=1000, request_id="tl")
    assert hist.total == 16
    assert positions_by_row(hist.records) == {0: list(range(8)), 1: list(range(8))}
    others = [r for r in monitor.get_history(limit=1000).records if r.request_id != "tl"]
    assert positions_by_row(others) == {0: list(range(5)), 1: list(range(5))}
    ref, _ = capture.features(sae)
    assert_statistics_match(monitor, ref)


def test_tl_generate_in_request(tl_model: nn.Module, tl_tokens: torch.Tensor) -> None:
    """HookedTransformer.generate calls `forward` directly (no model pre-hook fires); the
    layer hook still records, and inside a request the positions continue."""
    sae = make_sae("foreign")
    monitor = FeatureMonitor(D_SAE, compile=False)
    capture = Capture(tl_model, TL_HOOK)
    kw = {"max_new_tokens": 3, "do_sample": False, "verbose": False, "stop_at_eos": False,
          "use_past_kv_cache": True}
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[1, :3] = 0
    try:
        ref_out = tl_model.generate(tl_tokens, **kw)
        with monitor.attach(tl_model, TL_HOOK, sae):
            with torch.no_grad():
                tl_model(tl_tokens, attention_mask=mask)  # a masked forward just before
            capture.outputs.clear()
            capture.masks.clear()
            with monitor.request("tl-gen"):
                out = tl_model.generate(tl_tokens, **kw)
    finally:
        capture.remove()
    assert torch.equal(out, ref_out)
    fed = sum(o.shape[1] for o in capture.outputs)
    assert fed == 5 + 2
    hist = monitor.get_history(limit=1000, request_id="tl-gen")
    # Neither the earlier forward's request id nor its padding mask applies to the generate.
    assert positions_by_row(hist.records) == {0: list(range(fed)), 1: list(range(fed))}
    assert monitor.get_history(limit=1000).total == hist.total + 5 + 2
    assert monitor.state.total_tokens == hist.total + 5 + 2
    ref, by_pos = capture.features(sae)
    assert_records_match(hist.records, by_pos)


def test_tl_attention_mask_excludes_padding(tl_model: nn.Module,
                                            tl_tokens: torch.Tensor) -> None:
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[0, :2] = 0
    with torch.no_grad():
        ref_logits = tl_model(tl_tokens, attention_mask=mask)
    check_monitored_run(tl_model, TL_HOOK, make_sae("ours"),
                        lambda: tl_model(tl_tokens, attention_mask=mask), ref_logits,
                        positions={0: list(range(3)), 1: list(range(5))}, real_tokens=8)


def test_tl_records_the_input_tokens(tl_model: nn.Module, tl_tokens: torch.Tensor) -> None:
    monitor = FeatureMonitor(D_SAE, compile=False)
    with monitor.attach(tl_model, TL_HOOK, make_sae("foreign")), torch.no_grad():
        tl_model(tl_tokens)
    records = monitor.get_history(limit=100).records
    assert len(records) == tl_tokens.numel()
    for rec in records:
        assert rec.token_id == int(tl_tokens[rec.row, rec.token_position])
        assert rec.token is None  # this model has no tokenizer
