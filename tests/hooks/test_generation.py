"""HF `generate` under a monitor (a tiny random GPT-2, left-padded prompt): only real tokens are
recorded, once each and at their own positions (with or without a KV cache), with automatic or
named request ids, their input tokens, and statistics equal to an independent reference."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
import torch
from hook_reference import (
    D_SAE,
    GPT2_HOOK,
    LEFT_PADS,
    NEW_TOKENS,
    PROMPT_LEN,
    Capture,
    FakeTokenizer,
    assert_records_match,
    assert_statistics_match,
    generate,
    make_sae,
    positions_by_row,
)
from torch import nn

from featmon_widget import FeatureMonitor


@pytest.fixture
def generated(gpt2: nn.Module, prompt: tuple, request: pytest.FixtureRequest) -> dict:
    """A monitored `generate` inside `monitor.request("req-1")`, plus the reference capture."""
    kind = getattr(request, "param", "foreign")
    ids, mask = prompt
    sae = make_sae(kind)
    monitor = FeatureMonitor(D_SAE, compile=False, features=[0, 5, 17])
    capture = Capture(gpt2, GPT2_HOOK)
    try:
        with monitor.attach(gpt2, GPT2_HOOK, sae), monitor.request("req-1"):
            sequences = generate(gpt2, ids, mask)
    finally:
        capture.remove()
    ref, by_pos = capture.features(sae)
    return {"monitor": monitor, "capture": capture, "sae": sae, "ref": ref, "by_pos": by_pos,
            "sequences": sequences}


def test_gpt2_generate_counts_only_real_tokens(generated: dict) -> None:
    monitor, capture = generated["monitor"], generated["capture"]
    # generate feeds the prompt, then each generated token but the last one.
    forwards = len(capture.outputs)
    assert forwards == NEW_TOKENS
    assert [o.shape[1] for o in capture.outputs] == [PROMPT_LEN] + [1] * (NEW_TOKENS - 1)
    assert all(m is not None for m in capture.masks)
    real_prompt = 2 * PROMPT_LEN - LEFT_PADS
    expected = real_prompt + 2 * (NEW_TOKENS - 1)
    assert capture.real_tokens() == expected  # what the model forward actually received
    state = monitor.state
    assert state.total_tokens == expected
    assert state.forward_passes == forwards
    assert state.history_count == expected
    assert state.errors == 0 and state.last_error is None
    assert generated["sequences"].shape == (2, PROMPT_LEN + NEW_TOKENS)


def test_gpt2_generate_history_positions(generated: dict) -> None:
    monitor, by_pos = generated["monitor"], generated["by_pos"]
    hist = monitor.get_history(limit=1000)
    real = {0: PROMPT_LEN - LEFT_PADS, 1: PROMPT_LEN}
    decode_steps = NEW_TOKENS - 1
    assert hist.total == len(hist.records) == sum(real.values()) + 2 * decode_steps
    assert {r.request_id for r in hist.records} == {"req-1"}
    assert {r.record_id for r in hist.records} == {"req-1/0", "req-1/1"}
    # Prompt positions count real tokens only; generated tokens continue from there, per row.
    assert positions_by_row(hist.records) == {
        row: list(range(n + decode_steps)) for row, n in real.items()
    }
    # Newest first: the last decode step's tokens lead.
    assert {(r.row, r.token_position) for r in hist.records[:2]} == {
        (0, real[0] + decode_steps - 1), (1, real[1] + decode_steps - 1)}
    # No record holds a pad token: each record is the real token at its (row, position).
    assert set(by_pos) == {(r.row, r.token_position) for r in hist.records}
    assert_records_match(hist.records, by_pos)
    assert all(set(r.activations) == {0, 5, 17} for r in hist.records)


def test_gpt2_generate_without_cache_records_each_token_once(gpt2: nn.Module,
                                                             prompt: tuple) -> None:
    """Without a KV cache every step re-feeds the whole sequence; HF's position ids show which
    tokens are new, so each real token is recorded once, at its own position."""
    ids, mask = prompt
    cached, uncached = (FeatureMonitor(D_SAE, compile=False) for _ in range(2))
    sae = make_sae("foreign")
    for monitor, use_cache in ((cached, True), (uncached, False)):
        with monitor.attach(gpt2, GPT2_HOOK, sae), monitor.request("req-1"):
            generate(gpt2, ids, mask, use_cache=use_cache)
    assert uncached.state.total_tokens == cached.state.total_tokens
    got = uncached.get_history(limit=1000).records
    want = cached.get_history(limit=1000).records
    assert positions_by_row(got) == positions_by_row(want)
    for a, b in zip(sorted(got, key=lambda r: (r.row, r.token_position)),
                    sorted(want, key=lambda r: (r.row, r.token_position)), strict=True):
        assert [f for f, _ in a.top_k] == [f for f, _ in b.top_k]
    for a, b in zip(uncached.get_statistics().features, cached.get_statistics().features,
                    strict=True):
        assert (a.count, a.active_count) == (b.count, b.active_count)
        assert a.max == pytest.approx(b.max, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("generated", ["ours", "foreign"], indirect=True)
def test_gpt2_generate_statistics_match_reference(generated: dict) -> None:
    ref = generated["ref"]
    assert ref.shape == (2 * PROMPT_LEN - LEFT_PADS + 2 * (NEW_TOKENS - 1), D_SAE)
    assert_statistics_match(generated["monitor"], ref)


def test_gpt2_history_filter_by_row(generated: dict) -> None:
    monitor = generated["monitor"]
    decode_steps = NEW_TOKENS - 1
    row0 = monitor.get_history(limit=1000, request_id="req-1/0")
    assert row0.total == len(row0.records) == PROMPT_LEN - LEFT_PADS + decode_steps
    assert {(r.request_id, r.row) for r in row0.records} == {("req-1", 0)}
    assert positions_by_row(row0.records) == {0: list(range(row0.total))}
    row1 = monitor.get_history(limit=1000, request_id="req-1/1")
    assert row1.total == PROMPT_LEN + decode_steps
    assert {r.row for r in row1.records} == {1}
    assert monitor.get_history(limit=1000, request_id="req-1").total == row0.total + row1.total
    assert monitor.get_history(limit=3, request_id="req-1/0").total == row0.total
    assert len(monitor.get_history(limit=3, request_id="req-1/0").records) == 3
    assert monitor.get_history(request_id="req-2").total == 0
    assert monitor.get_history(request_id="req-1/2").total == 0


def test_gpt2_automatic_request_ids(gpt2: nn.Module, prompt: tuple) -> None:
    ids, mask = prompt
    monitor = FeatureMonitor(D_SAE, compile=False)
    with monitor.attach(gpt2, GPT2_HOOK, make_sae("foreign")), torch.no_grad():
        gpt2(ids, attention_mask=mask)
        gpt2(ids, attention_mask=mask)
        generate(gpt2, ids, mask)
    records = monitor.get_history(limit=1000).records
    by_request: dict[str, list] = defaultdict(list)
    for rec in records:
        by_request[rec.request_id].append(rec)
    assert len(by_request) == 2 + NEW_TOKENS  # one id per forward pass
    assert all(re.fullmatch(r"auto-\d+", rid) for rid in by_request)
    # Newest record first: the ids of the forwards in order, oldest first.
    order = list(dict.fromkeys(r.request_id for r in reversed(records)))
    real = {0: PROMPT_LEN - LEFT_PADS, 1: PROMPT_LEN}
    for rid in order[:3]:  # two plain forwards and the generate's prompt forward
        assert positions_by_row(by_request[rid]) == {r: list(range(n)) for r, n in real.items()}
    for step, rid in enumerate(order[3:]):
        # Decode steps: the attention mask alone gives the position, whatever the id.
        assert positions_by_row(by_request[rid]) == {r: [n + step] for r, n in real.items()}


@pytest.mark.parametrize("use_cache", [True, False])
def test_gpt2_generate_records_the_input_token_at_each_position(gpt2: nn.Module, prompt: tuple,
                                                                use_cache: bool) -> None:
    """Left padding, with and without a KV cache: each record's token is the sequence's token at
    its position (pads excluded), and its text comes from the tokenizer."""
    ids, mask = prompt
    monitor = FeatureMonitor(D_SAE, compile=False)
    with monitor.attach(gpt2, GPT2_HOOK, make_sae("foreign"), tokenizer=FakeTokenizer()), \
            monitor.request("req-1"):
        sequences = generate(gpt2, ids, mask, use_cache=use_cache)
    records = monitor.get_history(limit=1000).records
    pads = {0: LEFT_PADS, 1: 0}
    assert len(records) == monitor.state.total_tokens > 0
    for rec in records:
        assert rec.token_id == int(sequences[rec.row, pads[rec.row] + rec.token_position])
        assert rec.token == f"<tok{rec.token_id}>"
    latest = monitor.snapshot(records=5).records[0]
    assert latest["token"] == f"<tok{latest['token_id']}>"
