"""Top-activating examples: the kept set equals an offline computation over the same forwards."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from featmon_widget import FeatureMonitor
from featmon_widget.monitor.record import examples as examples_module

F = 5
VALUES = [0.0, 0.5, 1.0, 1.0, 2.0, -1.0, float("nan"), float("inf")]


@st.composite
def forwards(draw, sparse_ok: bool):
    out = []
    for i in range(draw(st.integers(1, 6))):
        request = draw(st.sampled_from(["a", "b", f"auto-{i}"]))
        batch = {"a": 2, "b": 1}.get(request) or draw(st.integers(1, 3))
        tokens = draw(st.integers(1, 4))
        acts = torch.tensor(draw(st.lists(st.sampled_from(VALUES), min_size=batch * tokens * F,
                                          max_size=batch * tokens * F))).view(batch, tokens, F)
        mask = torch.tensor(draw(st.lists(st.booleans(), min_size=batch * tokens,
                                          max_size=batch * tokens))).view(batch, tokens)
        ids = torch.tensor(draw(st.lists(st.integers(0, 99), min_size=batch * tokens,
                                         max_size=batch * tokens))).view(batch, tokens)
        known = draw(st.booleans())
        sparse = sparse_ok and draw(st.booleans())
        out.append((request, acts, mask, ids if known else None, sparse))
    return out


def _bf16(v: float) -> float | None:
    out = torch.tensor(v).to(torch.bfloat16).float().item()
    return None if math.isnan(out) else out


def reference(fwds, per_feature, window, threshold, native=True):
    """Per feature: (value, request, row, position, window ids without unknowns, index, the
    feature's activation on each of them), best first; ties to the earliest (forward, row).
    Activations are known for tokens of the example's own forward (with sparse input on the
    torch merge, only for the activating token)."""
    candidates = {f: [] for f in range(F)}
    seen: dict[tuple[str, int], list[int]] = {}  # real tokens so far, per request row
    order = 0
    for request, acts, mask, ids, sparse in fwds:
        batch, tokens, _ = acts.shape
        for b in range(batch):
            prior = seen.get((request, b), [])
            real = [t for t in range(tokens) if mask[b, t]]
            row_tokens = [int(ids[b, t]) if ids is not None else -1 for t in real]
            context = prior + row_tokens
            for f in range(F):
                best = None
                for rank, t in enumerate(real):
                    v = float(acts[b, t, f])
                    if math.isfinite(v) and v > threshold and (best is None or v > best[0]):
                        best = (v, rank)
                if best is None:
                    continue
                v, rank = best
                at = len(prior) + rank
                lo = max(0, at - window)
                cols = range(lo, min(len(context), at + window + 1))
                known = [c for c in cols if context[c] >= 0]
                index = known.index(at) if at in known else -1
                acts_known = []
                for c in known:
                    mine = c >= len(prior) and (native or not sparse or c == at)
                    acts_known.append(_bf16(float(acts[b, real[c - len(prior)], f]))
                                      if mine else None)
                candidates[f].append((v, order, request, b, len(prior) + rank,
                                      [context[c] for c in known], index, acts_known))
            seen[(request, b)] = context
            order += 1
    out = {}
    for f, cands in candidates.items():
        cands.sort(key=lambda c: (-c[0], c[1]))
        out[f] = [(c[0], c[2], c[3], c[4], c[5], c[6], c[7]) for c in cands[:per_feature]]
    return out


def run(fwds, per_feature, window, threshold, native=True):
    m = FeatureMonitor(F, examples_per_feature=per_feature, context_window=window,
                       threshold=threshold, compile=False, native=native)
    for request, acts, mask, ids, sparse in fwds:
        if sparse:
            # Every feature stored: the same values, in sparse form.
            idx = torch.arange(F).expand(*acts.shape[:2], F)
            m.on_sparse_activation(idx, acts, request_id=request, mask=mask, token_ids=ids)
        else:
            m.on_activation(acts, request_id=request, mask=mask, token_ids=ids)
    got = {}
    for f in range(F):
        got[f] = [(e.value, e.request_id, e.row, e.position, e.token_ids, e.index, e.activations)
                  for e in m.get_examples(f).examples]
    return m, got


@settings(max_examples=80, deadline=None)
@given(fwds=forwards(sparse_ok=True), per_feature=st.integers(1, 4), window=st.integers(0, 3),
       threshold=st.sampled_from([0.0, 0.75]), chunk=st.sampled_from([1, 1 << 21]),
       native=st.booleans())
def test_kept_examples_equal_the_offline_reference(fwds, per_feature, window, threshold, chunk,
                                                   native):
    """Both merges (the C kernels, and the torch one GPUs use), one row or all rows at once."""
    old = examples_module._CHUNK_ELEMENTS
    examples_module._CHUNK_ELEMENTS = chunk
    try:
        _, got = run(fwds, per_feature, window, threshold, native)
    finally:
        examples_module._CHUNK_ELEMENTS = old
    assert got == reference(fwds, per_feature, window, threshold, native)


@settings(max_examples=30, deadline=None)
@given(fwds=forwards(sparse_ok=False), window=st.integers(0, 2))
def test_negative_threshold_makes_zeros_examples_on_the_dense_path(fwds, window):
    _, got = run(fwds, 3, window, -0.5)
    assert got == reference(fwds, 3, window, -0.5)


def test_reset_clears_examples_threshold_and_selection_do_not():
    m = FeatureMonitor(4, examples_per_feature=2)
    m.on_activation(torch.tensor([[0.0, 3.0, 0.0, 1.0]]), request_id="r")
    m.configure(threshold=0.5, features=[1], selected=[1])
    assert [e.value for e in m.get_examples(1).examples] == [3.0]
    m.reset_statistics()
    assert m.get_examples(1).examples == []


def test_resizing_keeps_the_best_examples_that_fit():
    m = FeatureMonitor(2, examples_per_feature=3, context_window=2)
    m.on_activation(torch.tensor([[[1.0, 0], [3.0, 0], [2.0, 0], [0, 0], [0, 0]]]),
                    request_id="r", token_ids=torch.tensor([[5, 6, 7, 8, 9]]))
    m.on_activation(torch.tensor([[[4.0, 0]]]), request_id="s")
    m.configure(examples_per_feature=1, context_window=1)
    (best,) = m.get_examples(0).examples
    assert best.value == 4.0 and best.request_id == "s" and best.index == -1
    m.configure(examples_per_feature=0)
    assert m.get_examples(0).examples == [] and m.state.examples_bytes == 0


def test_bad_arguments_are_rejected():
    m = FeatureMonitor(4)
    with pytest.raises(ValueError, match="feature"):
        m.get_examples(4)
    with pytest.raises(ValueError, match="k"):
        m.get_examples(0, k=9)
    with pytest.raises(ValueError, match="examples_per_feature"):
        m.configure(examples_per_feature=65)


def test_memory_is_bounded_at_65536_features():
    m = FeatureMonitor(65536)
    assert m.state.examples_bytes <= 64 * 2**20
    assert m.state.examples_per_feature == 8 and m.state.context_window == 8


@pytest.mark.parametrize("architecture", ["standard", "topk"])
def test_hooked_sae_paths_keep_the_same_examples_as_its_features(architecture):
    """The fused own-SAE path and the TopK (sparse) path keep what `on_activation` of the SAE's
    dense features keeps."""
    from featmon_widget import SparseAutoencoder

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(8, 12, generator=gen)
    sae = SparseAutoencoder.from_tensors(w, torch.zeros(12), w.T.contiguous(), torch.zeros(8),
                                         architecture=architecture,
                                         k=3 if architecture == "topk" else None)
    x = torch.randn(3, 5, 8, generator=gen)
    ids = torch.randint(0, 50, (3, 5), generator=gen)
    hooked, direct = (FeatureMonitor.for_sae(sae, compile=True) for _ in range(2))
    hooked.encode_and_record(sae, x, "r", token_ids=ids)
    direct.on_activation(sae.encode(x), request_id="r", token_ids=ids)
    for f in range(12):
        a, b = hooked.get_examples(f).examples, direct.get_examples(f).examples
        assert [(e.record_id, e.position, e.token_ids, e.index) for e in a] == \
            [(e.record_id, e.position, e.token_ids, e.index) for e in b]
        # The compiled encode may round differently in the last bit.
        assert [e.value for e in a] == pytest.approx([e.value for e in b], rel=1e-5)


def test_named_request_ids_are_bounded_and_held_names_survive(monkeypatch):
    """Request names no kept example holds are forgotten past the cap (every distinct named
    request id used to be interned for good)."""
    from featmon_widget import FeatureMonitor
    from featmon_widget.monitor.record import requests as requests_module

    monkeypatch.setattr(requests_module, "MAX_REQUEST_NAMES", 8)
    monitor = FeatureMonitor(4, compile=False, examples_per_feature=2, context_window=1,
                             samples_per_feature=0)  # the sample's names: test_samples
    monitor.on_activation(torch.full((1, 4), 100.0), request_id="the-best")  # kept for good
    for i in range(50):
        monitor.on_activation(torch.full((1, 4), 1.0 + i / 100), request_id=f"req-{i}")
    names = monitor._recording.examples.names
    assert len(names) <= 9
    kept = monitor.get_examples(0)
    assert [row.request_id for row in kept.examples] == ["the-best", "req-49"]
