"""Model hooks (`FeatureMonitor.attach` / `featmon_widget.hooks.MonitorHook`) on real models.

Everything is built from tiny configs with random weights (no downloads). Every test compares
recorded values against a reference computed independently: our own forward hooks capture what
the model forward receives and what the hooked layer returns, the SAE encodes that, and numpy
(float64) reduces it. Most tests use the eager statistics path (FEATMON_COMPILE=0); one test
covers the compiled, fused encode + statistics path with our SparseAutoencoder.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from featmon_widget import FeatureMonitor, SparseAutoencoder

D_MODEL = 32
D_SAE = 48
VOCAB = 100
PAD = 0
GPT2_HOOK = "transformer.h.1"
TL_HOOK = "blocks.0.hook_resid_post"
NEW_TOKENS = 5
# Row 0 of the generate prompt is left-padded with this many pad tokens.
LEFT_PADS = 2
PROMPT_LEN = 6


@pytest.fixture(autouse=True)
def _eager_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATMON_COMPILE", "0")


# ---- SAEs ------------------------------------------------------------------------------------


def _sae_weights(d_in: int, d_sae: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(d_in, d_sae, generator=g) * 0.5,
        "b_enc": torch.randn(d_sae, generator=g) * 0.3 - 0.1,
        "W_dec": torch.randn(d_sae, d_in, generator=g) * 0.1,
        "b_dec": torch.zeros(d_in),
    }


class ForeignSAE(nn.Module):
    """An SAE-like object that is not ours: only `encode` and `d_sae`."""

    def __init__(self, d_in: int, d_sae: int, seed: int = 1) -> None:
        super().__init__()
        w = _sae_weights(d_in, d_sae, seed)
        self.W_enc = nn.Parameter(w["W_enc"], requires_grad=False)
        self.b_enc = nn.Parameter(w["b_enc"], requires_grad=False)
        self.d_sae = d_sae

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_enc + self.b_enc)


class ExplodingSAE:
    d_sae = D_SAE

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("the sae exploded")


def make_sae(kind: str, d_in: int = D_MODEL, d_sae: int = D_SAE, seed: int = 1) -> Any:
    if kind == "ours":
        return SparseAutoencoder.from_tensors(**_sae_weights(d_in, d_sae, seed))
    if kind == "foreign":
        return ForeignSAE(d_in, d_sae, seed)
    raise AssertionError(kind)


# ---- reference capture -----------------------------------------------------------------------


class Capture:
    """Our own hooks: the attention mask each model forward receives and the layer's output."""

    def __init__(self, model: nn.Module, layer: str, positional_mask: bool = False) -> None:
        self.positional_mask = positional_mask
        self.masks: list[torch.Tensor | None] = []
        self.outputs: list[torch.Tensor] = []
        self._handles = [
            model.register_forward_pre_hook(self._pre, with_kwargs=True),
            model.get_submodule(layer).register_forward_hook(self._post),
        ]

    def _pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask", args[1] if self.positional_mask else None)
        self.masks.append(mask.detach().clone() if mask is not None else None)

    def _post(self, module: nn.Module, args: tuple, output: Any) -> None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        self.outputs.append(hidden.detach().clone())

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def valid(self, i: int) -> torch.Tensor:
        """[batch, tokens] bool: which tokens of layer call `i` are real (not padding)."""
        batch, tokens = self.outputs[i].shape[:2]
        mask = self.masks[i] if i < len(self.masks) else None
        if mask is None:
            return torch.ones(batch, tokens, dtype=torch.bool)
        return mask[:, -tokens:] != 0

    def real_tokens(self) -> int:
        return sum(int(self.valid(i).sum()) for i in range(len(self.outputs)))

    def features(self, sae: Any, calls: range | None = None
                 ) -> tuple[np.ndarray, dict[tuple[int, int], torch.Tensor]]:
        """Reference features of the real tokens of layer calls `calls` (default all): a
        float64 [N, d_sae] array, and per (row, position) the feature vector, positions counting
        the real tokens of each row in the order the model saw them."""
        rows: list[torch.Tensor] = []
        by_pos: dict[tuple[int, int], torch.Tensor] = {}
        seen: dict[int, int] = defaultdict(int)
        with torch.no_grad():
            for i in calls if calls is not None else range(len(self.outputs)):
                out = self.outputs[i]
                feats = sae.encode(out)  # same call shape as the monitor: bit-identical
                valid = self.valid(i)
                rows.append(feats[valid])
                for b in range(out.shape[0]):
                    for t in range(out.shape[1]):
                        if valid[b, t]:
                            by_pos[(b, seen[b])] = feats[b, t]
                            seen[b] += 1
        return torch.cat(rows).double().numpy(), by_pos


def hook_counts(model: nn.Module, layer: str) -> tuple[int, int, int]:
    sub = model.get_submodule(layer)
    return len(model._forward_pre_hooks), len(model._forward_hooks), len(sub._forward_hooks)


# ---- assertions ------------------------------------------------------------------------------


def assert_statistics_match(monitor: FeatureMonitor, ref: np.ndarray, *, exact: bool = True,
                            threshold: float = 0.0) -> None:
    rel, abs_ = (1e-9, 1e-12) if exact else (1e-5, 1e-6)
    n = ref.shape[0]
    stats = monitor.get_statistics(list(range(ref.shape[1])))
    assert stats.total_activations == n
    assert monitor.state.total_tokens == n
    assert [f.feature_idx for f in stats.features] == list(range(ref.shape[1]))
    partly_active = 0
    for fs in stats.features:
        col = ref[:, fs.feature_idx]
        active = col > threshold
        assert fs.count == n
        assert fs.nan_count == 0
        assert fs.active_count == int(active.sum())
        assert fs.active_ratio == pytest.approx(active.mean(), rel=1e-12)
        assert fs.mean == pytest.approx(col.mean(), rel=rel, abs=abs_)
        assert fs.std == pytest.approx(col.std(ddof=1), rel=rel, abs=abs_)
        if exact:
            assert fs.min == col.min()
            assert fs.max == col.max()
        else:
            assert fs.min == pytest.approx(col.min(), rel=rel, abs=abs_)
            assert fs.max == pytest.approx(col.max(), rel=rel, abs=abs_)
        if active.any():
            assert fs.mean_active == pytest.approx(col[active].mean(), rel=rel, abs=abs_)
        else:
            assert fs.mean_active is None
        partly_active += 0 < active.sum() < n
    # The test data must exercise both sides of the threshold.
    assert partly_active >= D_SAE // 4


def assert_records_match(records: list, by_pos: dict[tuple[int, int], torch.Tensor],
                         exact: bool = True, top_k: int = 10) -> None:
    """Every record holds the top-k (above 0) of the reference token at its (row, position)."""
    tol = {"rel": 0, "abs": 0} if exact else {"rel": 1e-5, "abs": 1e-6}
    for rec in records:
        feats = by_pos[(rec.row, rec.token_position)].float()
        vals, idx = torch.topk(feats, top_k)
        expected = [(int(i), float(v)) for i, v in zip(idx, vals, strict=True) if v > 0]
        assert [f for f, _ in rec.top_k] == [f for f, _ in expected]
        for (_, got), (_, want) in zip(rec.top_k, expected, strict=True):
            assert got == pytest.approx(want, **tol)
        for f, v in rec.activations.items():
            assert v == pytest.approx(float(feats[f]), **tol)


def positions_by_row(records: list) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for rec in records:
        out[rec.row].append(rec.token_position)
    return {row: sorted(pos) for row, pos in out.items()}


# ---- GPT-2 (transformers) ---------------------------------------------------------------------


def check_monitored_run(model: nn.Module, hook_point: str, sae: Any, run: Any,
                        reference: torch.Tensor, *, positions: dict[int, list[int]],
                        real_tokens: int, positional_mask: bool = False) -> None:
    """Run `run()` with a monitor hooked at `hook_point`: the output equals `reference`, and
    the records (positions, values) and statistics match our own capture of the layer."""
    monitor = FeatureMonitor(D_SAE, compile=False)
    capture = Capture(model, hook_point, positional_mask=positional_mask)
    try:
        with monitor.attach(model, hook_point, sae), torch.no_grad():
            out = run()
    finally:
        capture.remove()
    assert torch.equal(out, reference)
    records = monitor.get_history(limit=1000).records
    assert positions_by_row(records) == positions
    ref, by_pos = capture.features(sae)
    assert ref.shape[0] == real_tokens
    assert_records_match(records, by_pos)
    assert_statistics_match(monitor, ref)


@pytest.fixture(scope="module")
def gpt2() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=D_MODEL, n_head=2, vocab_size=VOCAB, n_positions=64,
        bos_token_id=None, eos_token_id=None, pad_token_id=PAD,
    )
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture
def prompt() -> tuple[torch.Tensor, torch.Tensor]:
    """Batch 2; row 0 is left-padded (LEFT_PADS pad tokens), row 1 is all real tokens."""
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(1, VOCAB, (2, PROMPT_LEN), generator=g)
    mask = torch.ones(2, PROMPT_LEN, dtype=torch.long)
    ids[0, :LEFT_PADS] = PAD
    mask[0, :LEFT_PADS] = 0
    return ids, mask


def generate(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, **kw: Any) -> Any:
    return model.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                          pad_token_id=PAD, **kw)


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


@pytest.mark.parametrize("kernel", ["native", "compiled"])
def test_gpt2_compiled_fused_path(gpt2: nn.Module, prompt: tuple, kernel: str,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused paths under a real generate: on the CPU our SAE's activation runs inside the
    native statistics pass (no compiled graph needed); without the native kernel, encode and
    statistics run as one compiled graph."""
    if kernel == "compiled":
        monkeypatch.setenv("FEATMON_NATIVE", "0")
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
    monitor = FeatureMonitor.for_sae(sae, compile=True)
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


# ---- TransformerLens --------------------------------------------------------------------------


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


# ---- layers returning a plain tensor, a tuple or a list ---------------------------------------


class TinyLayer(nn.Module):
    def __init__(self, output: str) -> None:
        super().__init__()
        self.linear = nn.Linear(D_MODEL, D_MODEL)
        self.output = output

    def forward(self, h: torch.Tensor) -> Any:
        out = h + torch.tanh(self.linear(h))
        if self.output == "tensor":
            return out
        if self.output == "tuple":
            return out, torch.zeros(())
        if self.output == "list":
            return [out, None]
        return {"hidden": out}


class TinyEncoder(nn.Module):
    """A BERT-style encoder whose layers return `output` ("tensor", "tuple", "list", "dict")."""

    def __init__(self, output: str) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.embed = nn.Embedding(VOCAB, D_MODEL)
        self.layers = nn.ModuleList([TinyLayer(output) for _ in range(2)])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        h = self.embed(input_ids)
        for layer in self.layers:
            out = layer(h)
            h = out if isinstance(out, torch.Tensor) else (
                out["hidden"] if isinstance(out, dict) else out[0])
            if attention_mask is not None and attention_mask.dim() == 2:
                h = h * attention_mask[..., None]
        return h


def _right_padded() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (2, 6), generator=torch.Generator().manual_seed(11))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    ids[1, 4:] = PAD
    return ids, mask


@pytest.mark.parametrize("output", ["tensor", "tuple", "list"])
def test_layer_output_kinds_record_every_row(output: str) -> None:
    model = TinyEncoder(output).eval()
    ids, mask = _right_padded()
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
    ids, mask = _right_padded()
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
    ids, mask = _right_padded()
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
    ids, _ = _right_padded()
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
    ids, mask = _right_padded()
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


class FakeTokenizer:
    """Anything with `decode(ids)` names tokens."""

    def decode(self, ids: list[int]) -> str:
        return f"<tok{ids[0]}>"


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


def test_tl_records_the_input_tokens(tl_model: nn.Module, tl_tokens: torch.Tensor) -> None:
    monitor = FeatureMonitor(D_SAE, compile=False)
    with monitor.attach(tl_model, TL_HOOK, make_sae("foreign")), torch.no_grad():
        tl_model(tl_tokens)
    records = monitor.get_history(limit=100).records
    assert len(records) == tl_tokens.numel()
    for rec in records:
        assert rec.token_id == int(tl_tokens[rec.row, rec.token_position])
        assert rec.token is None  # this model has no tokenizer
