"""Monitoring an nnsight model: its `trace` and `generate` record the same features, positions
and tokens as the plain HF model on the same input."""

import warnings

import pytest
import torch

from featmon_widget import FeatureMonitor, SparseAutoencoder

nnsight = pytest.importorskip("nnsight")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

VOCAB, D_MODEL, D_SAE, HOOK = 64, 32, 48, "transformer.h.1"
TEXTS = ["w3 w4 w5 w6 w7", "w9 w10 w11"]  # unequal lengths: one row is padded


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {f"w{i}": i for i in range(VOCAB)}
    model = tokenizers.models.WordLevel(vocab, unk_token="w1")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w1",
                                                pad_token="w0", eos_token="w2",
                                                padding_side="left")


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=D_MODEL, n_head=2, vocab_size=VOCAB,
                                     n_positions=64, bos_token_id=2, eos_token_id=2,
                                     pad_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def sae():
    g = torch.Generator().manual_seed(1)
    return SparseAutoencoder.from_tensors(
        torch.randn(D_MODEL, D_SAE, generator=g) * 0.3, torch.randn(D_SAE, generator=g) * 0.1,
        torch.randn(D_SAE, D_MODEL, generator=g), torch.zeros(D_MODEL))


def wrapped(gpt2, tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LanguageModel's deprecation notice in nnsight 0.8
        return nnsight.LanguageModel(gpt2, tokenizer=tokenizer)


def monitor_for(sae) -> FeatureMonitor:
    return FeatureMonitor.for_sae(sae, compile=False, history_size=200, features=[0, 1, 2])


def same_records(a: FeatureMonitor, b: FeatureMonitor) -> None:
    assert a.state.total_tokens == b.state.total_tokens > 0
    for x, y in zip(a.get_statistics(list(range(D_SAE))).features,
                    b.get_statistics(list(range(D_SAE))).features, strict=True):
        assert (x.count, x.active_count) == (y.count, y.active_count)
        assert x.mean == pytest.approx(y.mean, rel=1e-5, abs=1e-6)
        assert x.max == pytest.approx(y.max, rel=1e-5, abs=1e-6)
    key = [(r.row, r.token_position, r.token_id, r.token) for r in a.get_history(200).records]
    assert key == [(r.row, r.token_position, r.token_id, r.token)
                   for r in b.get_history(200).records]


def test_trace_records_what_the_plain_model_records(gpt2, tokenizer, sae):
    lm = wrapped(gpt2, tokenizer)
    plain, traced = monitor_for(sae), monitor_for(sae)
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with plain.attach(gpt2, HOOK, sae, tokenizer=tokenizer), torch.no_grad():
        gpt2(**batch)
    with traced.attach(lm, HOOK, sae), lm.trace(TEXTS):
        pass
    assert traced.tokenizer is lm.tokenizer  # picked up from the nnsight model
    same_records(traced, plain)
    assert all(r.token_id is not None for r in traced.get_history(200).records)


def test_generate_records_what_the_plain_model_generates(gpt2, tokenizer, sae):
    lm = wrapped(gpt2, tokenizer)
    plain, traced = monitor_for(sae), monitor_for(sae)
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    settings = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    with plain.attach(gpt2, HOOK, sae, tokenizer=tokenizer), torch.no_grad():
        gpt2.generate(**batch, **settings)
    with traced.attach(lm, HOOK, sae), lm.generate(TEXTS, **settings):
        pass
    same_records(traced, plain)
    assert traced.state.total_tokens > 8  # the decode steps were recorded too


def test_removing_the_hook_leaves_the_nnsight_model_clean(gpt2, tokenizer, sae):
    lm = wrapped(gpt2, tokenizer)
    monitor = monitor_for(sae)
    before = len(gpt2.transformer.h[1]._forward_hooks)
    hook = monitor.attach(lm, HOOK, sae)
    hook.remove()
    assert len(gpt2.transformer.h[1]._forward_hooks) == before
    with lm.trace(TEXTS):
        pass
    assert monitor.state.total_tokens == 0


def test_something_that_is_not_a_model_is_a_clear_error(sae):
    with pytest.raises(TypeError, match="nnsight model wrapping one, got str"):
        monitor_for(sae).attach("gpt2", HOOK, sae)
