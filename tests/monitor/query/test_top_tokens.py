"""Top tokens: a feature without a label is described by the most frequent tokens of its kept
top examples, with counts, in `get_statistics` / `get_top_features` rows and the snapshot's
table (a field apart from the label, bounded); labelled features and unknown tokens get none."""

import json
from collections import Counter

import torch

from featmon_widget import FeatureMonitor
from featmon_widget.snapshot.options import TABLE_LABEL_BYTES, TABLE_TOP_TOKEN_BYTES
from featmon_widget.snapshot.top_tokens import TOP_TOKEN_CHARS, TOP_TOKENS, top_tokens

D = 6


class _Words:
    def decode(self, ids):
        return " ".join(f"t{i}" for i in ids)


def _monitor(**config) -> FeatureMonitor:
    config.setdefault("examples_per_feature", 8)
    m = FeatureMonitor(D, compile=False, **config)
    m.tokenizer = _Words()
    return m


def _forward(m: FeatureMonitor, peak_token: int, value: float, request: str) -> None:
    """One row of 3 tokens (ids peak_token, 50, 51) where feature 0 peaks on the first."""
    acts = torch.zeros(1, 3, D)
    acts[0, 0, 0] = value
    acts[0, 1, 0] = value / 10
    acts[0, :, 1] = torch.tensor([0.1, 0.2, 0.3])
    m.on_activation(acts, request_id=request,
                    token_ids=torch.tensor([[peak_token, 50, 51]]))


def test_top_tokens_count_the_kept_examples_tokens():
    m = _monitor()
    for i, (token, value) in enumerate([(7, 1.0), (9, 5.0), (7, 2.0), (7, 3.0), (8, 0.5)]):
        _forward(m, token, value, f"r{i}")
    rows = {r.feature_idx: r for r in m.get_statistics(list(range(D))).features}
    assert rows[0].top_tokens == [("t7", 3), ("t9", 1), ("t8", 1)]  # ties: the better example
    assert rows[0].label is None
    assert rows[1].top_tokens == [("t51", 5)]
    assert rows[2].top_tokens is None  # never fired: no examples
    # The offline reference: the token each kept example is at.
    for f in range(D):
        examples = m.get_examples(f).examples
        counts = Counter(e.token_ids[e.index] for e in examples)
        want = sorted(counts.items(), key=lambda kv: -kv[1])[:TOP_TOKENS]
        got = rows[f].top_tokens or []
        assert [(int(t[1:]), n) for t, n in got] == want


def test_a_label_replaces_top_tokens_and_they_are_off_the_label():
    m = _monitor()
    _forward(m, 7, 1.0, "r")
    m.set_labels({0: "seven"})
    rows = {r.feature_idx: r for r in m.get_top_features(D, "max").features}
    assert rows[0].label == "seven" and rows[0].top_tokens is None
    assert rows[1].label is None and rows[1].top_tokens == [("t51", 1)]


def test_without_token_ids_or_examples_there_are_none():
    m = _monitor()
    m.on_activation(torch.rand(2, 3, D))
    assert all(r.top_tokens is None for r in m.get_statistics(list(range(D))).features)
    off = _monitor(examples_per_feature=0)
    _forward(off, 7, 1.0, "r")
    assert all(r.top_tokens is None for r in off.get_statistics(list(range(D))).features)


def test_without_a_tokenizer_the_ids_are_shown():
    m = FeatureMonitor(D, compile=False)
    _forward(m, 7, 1.0, "r")
    assert m.get_statistics([0]).features[0].top_tokens == [("#7", 1)]


def test_the_snapshot_table_has_them_per_row_beside_the_labels():
    m = _monitor()
    for i, (token, value) in enumerate([(7, 1.0), (9, 5.0), (7, 2.0)]):
        _forward(m, token, value, f"r{i}")
    m.set_labels({1: "one"})
    snap = m.snapshot(table_rows=D, metric="max")
    features = list(memoryview(snap.table_features).cast("i"))
    assert len(snap.table_top_tokens) == len(features) == len(snap.table_labels)
    rows = {r.feature_idx: r for r in m.get_statistics(features).features}
    for feature, top, label in zip(features, snap.table_top_tokens, snap.table_labels,
                                   strict=True):
        want = rows[feature].top_tokens
        assert top == (None if want is None else [[t, n] for t, n in want])
        assert label == rows[feature].label
    assert snap.table_top_tokens[features.index(0)] == [["t7", 2], ["t9", 1]]
    assert snap.table_top_tokens[features.index(1)] is None  # labelled


class _Long:
    def decode(self, ids):
        return "\u2603" * 100


def test_top_tokens_are_bounded():
    assert top_tokens([1, 2, 3, 4, 5, -1], lambda i: "x" * 100) == [
        ("x" * (TOP_TOKEN_CHARS - 1) + "…", 1)] * 3
    assert top_tokens([-1, -1], str) is None
    m = FeatureMonitor(400, compile=False, examples_per_feature=8)
    m.tokenizer = _Long()
    g = torch.Generator().manual_seed(0)
    m.on_activation(torch.rand(8, 4, 400, generator=g),
                    token_ids=torch.randint(0, 1000, (8, 4), generator=g))
    snap = m.snapshot(table_rows=200)
    used = sum(len(json.dumps(t, ensure_ascii=False).encode()) for t in snap.table_top_tokens if t)
    assert used <= TABLE_TOP_TOKEN_BYTES + TABLE_LABEL_BYTES  # no labels: theirs is free
    assert snap.table_top_tokens[0] is not None and None in snap.table_top_tokens
    assert snap.nbytes() <= 64 * 1024
    # Labels and top tokens share: labels that fill theirs leave the top tokens their own part.
    m.set_labels({f: "\u2603" * 500 for f in range(0, 400, 2)})
    snap = m.snapshot(table_rows=200)
    used = sum(len(json.dumps(t, ensure_ascii=False).encode()) for t in snap.table_top_tokens if t)
    assert 0 < used <= TABLE_TOP_TOKEN_BYTES
    # Every row labelled: no list of nulls at all.
    m.set_labels({f: "x" for f in range(400)})
    assert m.snapshot(table_rows=200).table_top_tokens == []
