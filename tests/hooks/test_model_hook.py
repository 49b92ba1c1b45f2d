"""Attaching a monitor to a real model (a tiny random GPT-2): outputs stay bit-identical, the
hook comes off cleanly (remove, context manager, a failing SAE), bad arguments are refused, and
forwards under inference mode record like any other."""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest
import torch
from hook_reference import (
    D_MODEL,
    D_SAE,
    GPT2_HOOK,
    LEFT_PADS,
    NEW_TOKENS,
    PROMPT_LEN,
    Capture,
    ExplodingSAE,
    assert_statistics_match,
    generate,
    hook_counts,
    make_sae,
)
from torch import nn

from featmon_widget import FeatureMonitor


def test_gpt2_block_output_is_handled(gpt2: nn.Module, prompt: tuple) -> None:
    """Whatever GPT2Block returns in this transformers version (a tensor in 5.x, a tuple in
    4.x), the hook reads the hidden states [batch, tokens, d_model] from it."""
    ids, mask = prompt
    seen: list[Any] = []
    h = gpt2.get_submodule(GPT2_HOOK).register_forward_hook(lambda m, a, o: seen.append(o))
    try:
        with torch.no_grad():
            gpt2(ids, attention_mask=mask)
    finally:
        h.remove()
    out = seen[0]
    hidden = out[0] if isinstance(out, (tuple, list)) else out
    assert isinstance(hidden, torch.Tensor) and hidden.shape == (2, PROMPT_LEN, D_MODEL)
    monitor = FeatureMonitor(D_SAE, compile=False)
    with monitor.attach(gpt2, GPT2_HOOK, make_sae("foreign")), torch.no_grad():
        gpt2(ids, attention_mask=mask)
    assert monitor.state.total_tokens == PROMPT_LEN * 2 - LEFT_PADS


def test_gpt2_outputs_bit_identical(gpt2: nn.Module, prompt: tuple) -> None:
    ids, mask = prompt
    with torch.no_grad():
        ref_logits = gpt2(ids, attention_mask=mask).logits
    ref_gen = generate(gpt2, ids, mask, return_dict_in_generate=True, output_logits=True)
    baseline = hook_counts(gpt2, GPT2_HOOK)

    monitor = FeatureMonitor(D_SAE, compile=False)
    with monitor.attach(gpt2, GPT2_HOOK, make_sae("ours")):
        assert hook_counts(gpt2, GPT2_HOOK) != baseline
        with torch.no_grad():
            logits = gpt2(ids, attention_mask=mask).logits
        gen = generate(gpt2, ids, mask, return_dict_in_generate=True, output_logits=True)
    assert hook_counts(gpt2, GPT2_HOOK) == baseline

    assert torch.equal(logits, ref_logits)
    assert torch.equal(gen.sequences, ref_gen.sequences)
    assert len(gen.logits) == len(ref_gen.logits) == NEW_TOKENS
    for got, want in zip(gen.logits, ref_gen.logits, strict=True):
        assert torch.equal(got, want)
    assert monitor.state.forward_passes == 1 + NEW_TOKENS  # 1 forward + the generate's forwards
    assert monitor.state.errors == 0


def test_gpt2_remove_stops_recording(gpt2: nn.Module, prompt: tuple) -> None:
    ids, mask = prompt
    baseline = hook_counts(gpt2, GPT2_HOOK)
    monitor = FeatureMonitor(D_SAE, compile=False)
    assert monitor.state.hook_attached is False
    handle = monitor.attach(gpt2, GPT2_HOOK, make_sae("foreign"))
    state = monitor.state
    assert state.hook_attached is True and state.hook_point == GPT2_HOOK
    assert state.sae_attached is True
    with torch.no_grad():
        gpt2(ids, attention_mask=mask)
    recorded = monitor.state.total_tokens
    assert recorded == 2 * PROMPT_LEN - LEFT_PADS
    handle.remove()
    assert monitor.state.hook_attached is False
    assert hook_counts(gpt2, GPT2_HOOK) == baseline
    with torch.no_grad():
        gpt2(ids, attention_mask=mask)
    generate(gpt2, ids, mask)
    state = monitor.state
    assert state.total_tokens == recorded and state.forward_passes == 1
    assert monitor.get_history(limit=1000).total == recorded  # kept after removal
    handle.remove()  # removing twice is harmless
    assert monitor.state.hook_attached is False and hook_counts(gpt2, GPT2_HOOK) == baseline


def test_gpt2_context_manager_removes(gpt2: nn.Module, prompt: tuple) -> None:
    ids, mask = prompt
    baseline = hook_counts(gpt2, GPT2_HOOK)
    monitor = FeatureMonitor(D_SAE, compile=False)
    with monitor.attach(gpt2, GPT2_HOOK, make_sae("foreign")) as handle:
        assert monitor.state.hook_attached is True and handle.active
        with torch.no_grad():
            gpt2(ids, attention_mask=mask)
    assert not handle.active and "removed" in repr(handle)
    assert monitor.state.hook_attached is False
    assert hook_counts(gpt2, GPT2_HOOK) == baseline
    with torch.no_grad():
        gpt2(ids, attention_mask=mask)
    assert monitor.state.forward_passes == 1

    # An exception inside the block removes the hook too.
    with pytest.raises(KeyError), monitor.attach(gpt2, GPT2_HOOK):
        raise KeyError("user code failed")
    assert monitor.state.hook_attached is False
    assert hook_counts(gpt2, GPT2_HOOK) == baseline


@pytest.mark.parametrize(
    ("sae_factory", "message"),
    [
        (ExplodingSAE, "the sae exploded"),
        # Right width, wrong input width: our SAE raises inside encode.
        (lambda: make_sae("ours", d_in=16), "expects inputs"),
    ],
    ids=["encode-raises", "wrong-d_in"],
)
def test_gpt2_failing_sae_does_not_break_forward(gpt2: nn.Module, prompt: tuple,
                                                 sae_factory: Any, message: str) -> None:
    ids, mask = prompt
    with torch.no_grad():
        ref_logits = gpt2(ids, attention_mask=mask).logits
    ref_tokens = generate(gpt2, ids, mask)
    baseline = hook_counts(gpt2, GPT2_HOOK)
    monitor = FeatureMonitor(D_SAE, compile=False)
    events: list[tuple[str, Any]] = []
    monitor.on_state_change(lambda event, state: events.append((event, state)))
    handle = monitor.attach(gpt2, GPT2_HOOK, sae_factory())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            logits = gpt2(ids, attention_mask=mask).logits
    assert torch.equal(logits, ref_logits)
    ours = [w for w in caught if issubclass(w.category, RuntimeWarning)
            and "featmon_widget" in str(w.message)]
    assert len(ours) == 1
    assert message in str(ours[0].message) and GPT2_HOOK in str(ours[0].message)

    state = monitor.state
    assert state.errors == 1
    assert state.last_error is not None and message in state.last_error
    assert state.hook_attached is False and not handle.active
    assert state.total_tokens == 0 and state.forward_passes == 0 and state.history_count == 0
    assert hook_counts(gpt2, GPT2_HOOK) == baseline
    assert [e for e, _ in events] == ["error"] and events[0][1].errors == 1

    # Later forwards: identical outputs, nothing recorded, nothing raised or warned.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            assert torch.equal(gpt2(ids, attention_mask=mask).logits, ref_logits)
        assert torch.equal(generate(gpt2, ids, mask), ref_tokens)
    assert not [w for w in caught if "featmon_widget" in str(w.message)]
    state = monitor.state
    assert state.errors == 1 and state.total_tokens == 0 and state.forward_passes == 0


def test_gpt2_wrong_width_sae_raises(gpt2: nn.Module) -> None:
    baseline = hook_counts(gpt2, GPT2_HOOK)
    monitor = FeatureMonitor(D_SAE, compile=False)
    for sae in (make_sae("foreign", d_sae=D_SAE + 1), make_sae("ours", d_sae=D_SAE - 8)):
        with pytest.raises(ValueError, match="d_sae"):
            monitor.attach(gpt2, GPT2_HOOK, sae)
    with pytest.raises(ValueError, match="needs an SAE"):
        monitor.attach(gpt2, GPT2_HOOK)
    assert monitor.state.hook_attached is False and monitor.state.sae_attached is False
    assert hook_counts(gpt2, GPT2_HOOK) == baseline


@pytest.mark.parametrize(
    "hook_point", ["transformer.h.7", "transformer.nope", "transformer.wte.weight"]
)
def test_gpt2_bad_hook_point_raises(gpt2: nn.Module, hook_point: str) -> None:
    baseline = hook_counts(gpt2, GPT2_HOOK)
    monitor = FeatureMonitor(D_SAE, compile=False)
    with pytest.raises(ValueError, match=re.escape(repr(hook_point))):
        monitor.attach(gpt2, hook_point, make_sae("foreign"))
    with pytest.raises(TypeError, match="hook_point"):
        monitor.attach(gpt2, gpt2.get_submodule(GPT2_HOOK), make_sae("foreign"))
    assert monitor.state.hook_attached is False
    assert hook_counts(gpt2, GPT2_HOOK) == baseline


def test_gpt2_under_inference_mode(gpt2: nn.Module, prompt: tuple) -> None:
    """Forwards under torch.inference_mode and under no_grad mix in one monitor."""
    ids, mask = prompt
    sae = make_sae("ours")
    monitor = FeatureMonitor(D_SAE, compile=False)
    capture = Capture(gpt2, GPT2_HOOK)
    try:
        with monitor.attach(gpt2, GPT2_HOOK, sae):
            with torch.inference_mode():
                gpt2(ids, attention_mask=mask)
            with torch.no_grad():
                gpt2(ids, attention_mask=mask)
            with torch.inference_mode():
                gpt2(ids, attention_mask=mask)
    finally:
        capture.remove()
    assert monitor.state.errors == 0, monitor.state.last_error
    ref, _ = capture.features(sae)
    assert_statistics_match(monitor, ref)
