"""`FeatureMonitor.probe`: the features on each token of a text equal `sae.encode` of the hook
point's output (HF, TransformerLens, nnsight); `record=False` leaves every recorded state as it
was (saved files, every get_*), also with other parts on and while another thread records;
`record=True` records each text as its own request; bounded, clear errors, and a forward that
raises leaves no capture or muting behind."""

from __future__ import annotations

import copy
import json
import threading
import warnings
from pathlib import Path

import pytest
import torch

from featmon_widget import FeatureMonitor, ProbeResponse, SparseAutoencoder
from featmon_widget.monitor.query.probe import (
    MAX_PROBE_CHARS,
    MAX_PROBE_TEXTS,
    MAX_PROBE_TOKENS,
)

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

VOCAB, D_MODEL, D_SAE, HOOK = 64, 32, 48, "transformer.h.1"
TEXT = "w3 w4 w5 w6 w7 w8"


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {f"w{i}": i for i in range(VOCAB)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w1"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w1",
                                                pad_token="w0", eos_token="w2",
                                                bos_token="w2")


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=D_MODEL, n_head=2, vocab_size=VOCAB,
                                     n_positions=300, bos_token_id=2, eos_token_id=2,
                                     pad_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def sae():
    g = torch.Generator().manual_seed(1)
    return SparseAutoencoder.from_tensors(
        torch.randn(D_MODEL, D_SAE, generator=g) * 0.3, torch.randn(D_SAE, generator=g) * 0.1,
        torch.randn(D_SAE, D_MODEL, generator=g), torch.zeros(D_MODEL))


def monitor_for(sae, **config) -> FeatureMonitor:
    config.setdefault("selected", [0, 5])
    config.setdefault("history_size", 64)
    return FeatureMonitor.for_sae(sae, compile=False, **config)


def reference(model, layer: str, sae, call) -> torch.Tensor:
    """`sae.encode` of `layer`'s output, captured by a hook of our own, [tokens, d_sae]."""
    seen = []

    def keep(module, args, output):
        seen.append((output[0] if isinstance(output, tuple) else output).detach())

    handle = model.get_submodule(layer).register_forward_hook(keep)
    try:
        with torch.no_grad():
            call()
    finally:
        handle.remove()
    with torch.no_grad():
        return sae.encode(seen[0]).reshape(-1, D_SAE)


def check_against(response: ProbeResponse, expected: torch.Tensor, ids: list[int],
                  threshold: float = 0.0) -> None:
    (text,) = response.texts
    assert text.token_ids == ids
    for f in response.features:
        assert text.activations[f] == pytest.approx(expected[:, f].tolist(), abs=1e-6)
    for t, top in enumerate(text.top_features):
        row = expected[t]
        want = sorted(((f, v) for f, v in enumerate(row.tolist()) if v > threshold),
                      key=lambda fv: -fv[1])[:5]
        assert [f for f, _ in top] == [f for f, _ in want]
        assert [v for _, v in top] == pytest.approx([v for _, v in want], abs=1e-6)


def recorded_state(monitor: FeatureMonitor, folder: Path) -> dict:
    """Everything a monitor recorded: its saved files byte for byte and every read."""
    monitor.save(folder)
    files = {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    meta = json.loads(files.pop("monitor.json"))
    meta.pop("saved_at")
    meta.pop("json_sha256")  # a digest of the JSON, saved_at included
    state = monitor.state.to_dict()
    return {
        "files": files, "meta": meta, "state": state,
        "statistics": monitor.get_statistics(list(range(D_SAE))),
        "history": monitor.get_history(1000),
        "examples": [monitor.get_examples(f) for f in range(D_SAE)],
        "top": monitor.get_top_features(20, "max"),
        "health": monitor.get_health(),
    }


def test_hf_probe_equals_sae_encode_of_the_hook_output(gpt2, tokenizer, sae):
    monitor = monitor_for(sae)
    monitor.attach(gpt2, HOOK, sae, tokenizer=tokenizer)
    response = monitor.probe(TEXT)
    enc = tokenizer(TEXT, return_tensors="pt")
    expected = reference(gpt2, HOOK, sae, lambda: gpt2(**enc))
    assert response.features == [0, 5] and response.hook_point == HOOK
    assert not response.recorded and response.texts[0].request_id is None
    check_against(response, expected, enc["input_ids"][0].tolist())
    assert [t.strip() for t in response.texts[0].tokens] == TEXT.split()


def test_probe_of_several_texts_and_chosen_features(gpt2, tokenizer, sae):
    monitor = monitor_for(sae)
    monitor.attach(gpt2, HOOK, sae, tokenizer=tokenizer)
    monitor.set_labels({3: "three", 7: "seven"})
    response = monitor.probe(["w9 w8", TEXT], features=[3, 7, 3], k=3)
    assert response.features == [3, 7]
    assert [len(t.token_ids) for t in response.texts] == [2, 6]
    assert all(len(top) <= 3 for t in response.texts for top in t.top_features)
    named = {f for t in response.texts for top in t.top_features for f, _ in top} | {3, 7}
    assert response.labels == {f: lab for f, lab in {3: "three", 7: "seven"}.items()
                               if f in named}


def test_record_false_changes_nothing_recorded(gpt2, tokenizer, sae, tmp_path, manual_clock):
    monitor = monitor_for(sae, health_every=1, examples_per_feature=4, throttle_ms=10)
    with manual_clock.settled():
        watch = monitor.watch([0, 1, 2], above=0.0)
    monitor.attach(gpt2, HOOK, sae, tokenizer=tokenizer)
    with torch.no_grad():
        gpt2(**tokenizer("w7 w8 w9", return_tensors="pt"))
    manual_clock.advance(1.0)  # the watch's hits are delivered
    before = recorded_state(monitor, tmp_path / "before")
    hits = monitor.watch_hits()
    assert hits > 0
    monitor.probe([TEXT, "w4 w6 w8 w9"])
    manual_clock.advance(1.0)
    after = recorded_state(monitor, tmp_path / "after")
    assert after == before
    assert monitor.current_request() == "auto-1"  # the probe used no automatic id
    assert monitor.watch_hits() == hits and len(watch.recent) == hits
    # The next forward records as usual.
    with torch.no_grad():
        gpt2(**tokenizer("w7 w8 w9", return_tensors="pt"))
    assert monitor.state.total_tokens == 6
    assert monitor.probe(TEXT, record=True).texts[0].request_id == "probe-0"
    assert monitor.state.total_tokens == 12


def test_record_true_records_each_text_as_its_own_request(gpt2, tokenizer, sae):
    monitor = monitor_for(sae, features=[0, 5])
    monitor.attach(gpt2, HOOK, sae, tokenizer=tokenizer)
    with monitor.request("probe-0"), torch.no_grad():  # taken: the probe picks another id
        gpt2(**tokenizer("w9", return_tensors="pt"))
    response = monitor.probe([TEXT, "w9 w8"], record=True)
    ids = [t.request_id for t in response.texts]
    assert ids == ["probe-1", "probe-2"] and response.recorded
    assert monitor.state.total_tokens == 1 + 6 + 2
    history = monitor.get_history(100, request_id="probe-1").records
    assert sorted(r.token_position for r in history) == list(range(6))
    for record in history:
        for f in (0, 5):
            assert record.activations[f] == pytest.approx(
                response.texts[0].activations[f][record.token_position], abs=1e-6)


def test_probe_is_bounded_and_checks_its_input(gpt2, tokenizer, sae):
    monitor = monitor_for(sae)
    with pytest.raises(ValueError, match="attached model"):
        monitor.probe(TEXT)
    monitor.attach(gpt2, HOOK, sae, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="MAX_PROBE_TEXTS"):
        monitor.probe(["w3"] * (MAX_PROBE_TEXTS + 1))
    with pytest.raises(ValueError, match="MAX_PROBE_CHARS"):
        monitor.probe("w3 " * (MAX_PROBE_CHARS // 3 + 1))
    with pytest.raises(ValueError, match="MAX_PROBE_TOKENS"):
        monitor.probe(" ".join(["w3"] * (MAX_PROBE_TOKENS + 1)))
    with pytest.raises(ValueError, match="non-empty"):
        monitor.probe(["w3", "  "])
    with pytest.raises(ValueError, match="texts"):
        monitor.probe(3)
    with pytest.raises(ValueError, match="feature"):
        monitor.probe(TEXT, features=[D_SAE])
    with pytest.raises(ValueError, match="k"):
        monitor.probe(TEXT, k=0)
    with pytest.raises(ValueError, match="record"):
        monitor.probe(TEXT, record="yes")
    assert monitor.state.total_tokens == 0


def test_no_tokenizer_is_a_clear_error(gpt2, sae):
    monitor = monitor_for(sae)
    monitor.attach(gpt2, HOOK, sae)
    with pytest.raises(ValueError, match="tokenizer"):
        monitor.probe(TEXT)
    monitor.tokenizer = type("DecodeOnly", (), {"decode": lambda self, ids: "x"})()
    with pytest.raises(ValueError, match="encodes text"):
        monitor.probe(TEXT)


class Failing(torch.nn.Module):
    """Raises after the hooked layer ran, when told to."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.fail = False

    def forward(self, input_ids, attention_mask=None):
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask)
        if self.fail:
            raise RuntimeError("boom")
        return out


def test_a_forward_that_raises_leaves_no_capture_or_muting(gpt2, tokenizer, sae):
    model = Failing(gpt2)
    monitor = monitor_for(sae)
    hook = monitor.attach(model, "inner." + HOOK, sae, tokenizer=tokenizer)
    model.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        monitor.probe(TEXT)
    assert hook._context.captured is None
    model.fail = False
    with torch.no_grad():
        model(**tokenizer("w3 w4", return_tensors="pt"))
    assert monitor.state.total_tokens == 2  # recording, not muted
    assert monitor.current_request().startswith("auto-")
    assert monitor.probe(TEXT).texts[0].token_ids  # and probing still works


def test_probe_while_another_thread_records(gpt2, tokenizer, sae):
    expected = reference(gpt2, HOOK, sae, lambda: gpt2(**tokenizer(TEXT, return_tensors="pt")))
    monitor = monitor_for(sae, history_size=1000)
    monitor.attach(gpt2, HOOK, sae, tokenizer=tokenizer)
    enc = tokenizer("w5 w6 w7", return_tensors="pt")
    errors: list[BaseException] = []

    def record() -> None:
        try:
            for _ in range(20):
                with torch.no_grad():
                    gpt2(**enc)
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    thread = threading.Thread(target=record)
    thread.start()
    responses = [monitor.probe(TEXT) for _ in range(5)]
    recorded = [monitor.probe(TEXT, record=True) for _ in range(3)]
    thread.join()
    assert errors == [] and monitor.state.errors == 0
    assert monitor.state.total_tokens == 20 * 3 + 3 * 6  # the other thread's, the recorded probes
    for response in responses + recorded:
        check_against(response, expected, tokenizer(TEXT)["input_ids"])
    for response in recorded:
        (text,) = response.texts
        history = monitor.get_history(1000, request_id=text.request_id).records
        assert sorted(r.token_position for r in history) == list(range(6))
    others = [r for r in monitor.get_history(1000).records if r.request_id.startswith("auto-")]
    assert len(others) == 20 * 3 and {r.token_id for r in others} == {5, 6, 7}


def test_transformerlens_probe(tokenizer, sae):
    tokenizer = copy.deepcopy(tokenizer)
    # It adds BOS itself, so TransformerLens takes it as it is (no download of a BOS variant).
    tokenizer.init_kwargs.update(name_or_path="wordlevel", add_bos_token=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tl = pytest.importorskip("transformer_lens")
        config = tl.HookedTransformerConfig(n_layers=1, d_model=D_MODEL, n_ctx=32, d_head=8,
                                            n_heads=4, d_vocab=VOCAB, act_fn="relu", seed=0,
                                            device="cpu")
        model = tl.HookedTransformer(config, tokenizer=tokenizer).eval()
    hook_point = "blocks.0.hook_resid_post"
    monitor = monitor_for(sae)
    monitor.attach(model, hook_point, sae)
    response = monitor.probe(TEXT)
    assert monitor.state.total_tokens == 0
    tokens = model.to_tokens(TEXT)
    expected = reference(model, hook_point, sae, lambda: model(tokens))
    check_against(response, expected, tokens[0].tolist())


def test_transformerlens_without_tokenizer_is_a_clear_error(sae):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tl = pytest.importorskip("transformer_lens")
        config = tl.HookedTransformerConfig(n_layers=1, d_model=D_MODEL, n_ctx=32, d_head=8,
                                            n_heads=4, d_vocab=VOCAB, act_fn="relu", seed=0,
                                            device="cpu")
        model = tl.HookedTransformer(config).eval()
    monitor = monitor_for(sae)
    monitor.attach(model, "blocks.0.hook_resid_post", sae)
    with pytest.raises(ValueError, match="tokenizer"):
        monitor.probe(TEXT)


def test_nnsight_probe(gpt2, tokenizer, sae):
    nnsight = pytest.importorskip("nnsight")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = nnsight.LanguageModel(gpt2, tokenizer=tokenizer)
    monitor = monitor_for(sae)
    monitor.attach(lm, HOOK, sae)
    response = monitor.probe(TEXT)
    assert monitor.state.total_tokens == 0
    enc = tokenizer(TEXT, return_tensors="pt")
    check_against(response, reference(gpt2, HOOK, sae, lambda: gpt2(**enc)),
                  enc["input_ids"][0].tolist())



def test_without_selected_features_only_the_top_features_are_read(gpt2, tokenizer, sae):
    monitor = monitor_for(sae, selected=[])
    monitor.attach(gpt2, HOOK, sae, tokenizer=tokenizer)
    (text,) = monitor.probe(TEXT).texts
    assert text.activations == {} and len(text.top_features) == len(text.token_ids) == 6
