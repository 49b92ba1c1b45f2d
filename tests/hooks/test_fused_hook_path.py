"""The fused encode + statistics paths under a real generate: the native statistics pass, and the
compiled graph when the native kernel is off, record what the eager reference records."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from hook_reference import (
    GPT2_HOOK,
    LEFT_PADS,
    NEW_TOKENS,
    PROMPT_LEN,
    Capture,
    assert_records_match,
    assert_statistics_match,
    generate,
    make_sae,
    positions_by_row,
)
from torch import nn

from featmon_widget import FeatureMonitor


@pytest.mark.parametrize("kernel", ["native", "compiled"])
def test_gpt2_compiled_fused_path(gpt2: nn.Module, prompt: tuple, kernel: str,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused paths under a real generate: on the CPU our SAE's activation runs inside the
    native statistics pass (no compiled graph needed); without the native kernel, encode and
    statistics run as one compiled graph."""
    ids, mask = prompt
    sae = make_sae("ours")
    # Count calls into compiled functions that are handed this SAE's encode.
    real_compile = torch.compile
    calls: list[tuple[int, ...]] = []

    def spying_compile(fn: Any, *args: Any, **kwargs: Any) -> Any:
        compiled = real_compile(fn, *args, **kwargs)

        def counting(*a: Any, **kw: Any) -> Any:
            if any(arg == sae.encode for arg in a if callable(arg)):
                calls.append(tuple(a[1].shape))
            return compiled(*a, **kw)
        return counting

    monkeypatch.setattr(torch, "compile", spying_compile)
    monitor = FeatureMonitor.for_sae(sae, compile=True, native=kernel == "native")
    capture = Capture(gpt2, GPT2_HOOK)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with monitor.attach(gpt2, GPT2_HOOK), monitor.request("req-c"):
                sequences = generate(gpt2, ids, mask)
        finally:
            capture.remove()
    ours = [str(w.message) for w in caught if "featmon_widget" in str(w.message)]
    assert not ours, ours
    if kernel == "compiled":
        assert len(calls) == NEW_TOKENS  # every layer call went through the compiled graph
    else:
        assert calls == []  # one GEMM, then the native pass activates and reduces
        assert monitor._recording.stats.compiled.mode == "native"
    assert torch.equal(sequences, generate(gpt2, ids, mask))
    assert monitor.state.errors == 0
    ref, by_pos = capture.features(sae)
    assert_statistics_match(monitor, ref, exact=False)
    hist = monitor.get_history(limit=1000)
    real = {0: PROMPT_LEN - LEFT_PADS, 1: PROMPT_LEN}
    assert positions_by_row(hist.records) == {
        row: list(range(n + NEW_TOKENS - 1)) for row, n in real.items()
    }
    assert {r.request_id for r in hist.records} == {"req-c"}
    assert_records_match(hist.records, by_pos, exact=False)
