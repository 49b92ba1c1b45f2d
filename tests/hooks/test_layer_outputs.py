"""Layers that return a tensor, a tuple, a list or something else, HF BERT layers with the mask
given either way, 4-D attention biases, and a layer shared within one forward."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
import torch
from hook_reference import (
    D_MODEL,
    D_SAE,
    VOCAB,
    Capture,
    TinyEncoder,
    assert_records_match,
    assert_statistics_match,
    check_monitored_run,
    make_sae,
    positions_by_row,
    right_padded,
)

from featmon_widget import FeatureMonitor


@pytest.mark.parametrize("output", ["tensor", "tuple", "list"])
def test_layer_output_kinds_record_every_row(output: str) -> None:
    model = TinyEncoder(output).eval()
    ids, mask = right_padded()
    with torch.no_grad():
        ref = model(ids, attention_mask=mask)
    sae = make_sae("ours")
    monitor = FeatureMonitor(D_SAE, compile=False)
    capture = Capture(model, "layers.1")
    try:
        with monitor.attach(model, "layers.1", sae), torch.no_grad():
            assert torch.equal(model(ids, attention_mask=mask), ref)
            with monitor.request("r"):
                model(ids)  # no mask: every token is real
    finally:
        capture.remove()
    first = [r for r in monitor.get_history(limit=1000).records if r.request_id != "r"]
    assert positions_by_row(first) == {0: list(range(6)), 1: list(range(4))}
    second = monitor.get_history(limit=1000, request_id="r").records
    assert positions_by_row(second) == {0: list(range(6)), 1: list(range(6))}
    ref_feats, _ = capture.features(sae)
    assert ref_feats.shape[0] == 10 + 12
    assert_statistics_match(monitor, ref_feats)
    assert_records_match(first, capture.features(sae, range(0, 1))[1])
    assert_records_match(second, capture.features(sae, range(1, 2))[1])


def test_layer_returning_non_tensor_is_an_error_not_a_crash() -> None:
    model = TinyEncoder("dict").eval()
    ids, mask = right_padded()
    with torch.no_grad():
        ref = model(ids, attention_mask=mask)
    monitor = FeatureMonitor(D_SAE, compile=False)
    monitor.attach(model, "layers.0", make_sae("foreign"))
    with pytest.warns(RuntimeWarning, match="layers.0"), torch.no_grad():
        out = model(ids, attention_mask=mask)
    assert torch.equal(out, ref)
    state = monitor.state
    assert state.errors == 1 and "TypeError" in (state.last_error or "")
    assert "dict" in (state.last_error or "")
    assert state.hook_attached is False and state.total_tokens == 0


@pytest.mark.parametrize("mask_arg", ["keyword", "positional"])
def test_hf_bert_layer_records_both_rows(mask_arg: str) -> None:
    """BertLayer returns a plain tensor in transformers 5; `bert(ids, mask)` passes the mask
    positionally, and padding must be excluded either way."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(2)
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=D_MODEL, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    model = transformers.BertModel(config).eval()
    ids, mask = right_padded()
    positional = mask_arg == "positional"

    def run() -> torch.Tensor:
        out = model(ids, mask) if positional else model(ids, attention_mask=mask)
        return out.last_hidden_state

    with torch.no_grad():
        ref = run()
    check_monitored_run(model, "encoder.layer.1", make_sae("foreign"), run, ref,
                        positions={0: list(range(6)), 1: list(range(4))}, real_tokens=10,
                        positional_mask=positional)


def test_prepared_4d_mask_is_ignored() -> None:
    """A 4-D mask (an attention bias) does not say which tokens are padding: every token is
    recorded, and monitoring does not fail."""
    model = TinyEncoder("tensor").eval()
    ids, _ = right_padded()
    bias = torch.zeros(2, 1, 6, 6)
    sae = make_sae("ours")
    monitor = FeatureMonitor(D_SAE, compile=False)
    capture = Capture(model, "layers.0")
    try:
        with monitor.attach(model, "layers.0", sae), torch.no_grad():
            model(ids, attention_mask=bias)
    finally:
        capture.remove()
    state = monitor.state
    assert state.errors == 0 and state.total_tokens == 12
    records = monitor.get_history(limit=1000).records
    assert positions_by_row(records) == {0: list(range(6)), 1: list(range(6))}
    capture.masks = [None]
    ref, by_pos = capture.features(sae)
    assert_records_match(records, by_pos)
    assert_statistics_match(monitor, ref)


def test_one_automatic_id_per_forward_for_a_shared_layer() -> None:
    """A layer that runs twice in one forward (shared weights) records both calls under the
    forward's one automatic id."""
    model = TinyEncoder("tensor").eval()
    model.layers[1] = model.layers[0]
    ids, mask = right_padded()
    monitor = FeatureMonitor(D_SAE, compile=False)
    with monitor.attach(model, "layers.0", make_sae("foreign")), torch.no_grad():
        model(ids, attention_mask=mask)
        model(ids)
    state = monitor.state
    assert state.forward_passes == 4 and state.total_tokens == 2 * 10 + 2 * 12
    by_request: dict[str, int] = defaultdict(int)
    for rec in monitor.get_history(limit=1000).records:
        by_request[rec.request_id] += 1
    assert sorted(by_request.values()) == [20, 24]
    assert all(re.fullmatch(r"auto-\d+", rid) for rid in by_request)
