"""Feature labels from dicts and files (JSON, JSON Lines, CSV, gzip), shown wherever a feature
is."""

import gzip
import json

import numpy as np
import pytest
import torch

from featmon_widget import FeatureMonitor
from featmon_widget.snapshot.options import TABLE_LABEL_CHARS

# The shape of a Neuronpedia explanations export (fields we do not read are kept as they come).
NEURONPEDIA = [
    {"modelId": "gpt2-small", "layer": "6-res-jb", "index": "3", "description": " the word 'by'",
     "explanationModelName": "gpt-4o-mini", "typeName": "oai_token-act-pair"},
    {"modelId": "gpt2-small", "layer": "6-res-jb", "index": "3", "description": "second one"},
    {"modelId": "gpt2-small", "layer": "6-res-jb", "index": "7", "description": "file paths"},
]


def _monitor():
    m = FeatureMonitor(10, selected=[3])
    m.on_activation(torch.rand(4, 10))
    return m


def test_dict_labels_show_in_statistics_top_features_examples_and_snapshot():
    m = _monitor()
    assert m.set_labels({3: "passive 'by'", "7": "paths"}) == 2
    assert m.get_statistics([3]).features[0].label == "passive 'by'"
    assert m.get_statistics([0]).features[0].label is None
    top = {r.feature_idx: r.label for r in m.get_top_features(k=10).features}
    assert top[7] == "paths"
    assert m.get_examples(3).label == "passive 'by'"
    snap = m.snapshot(table_rows=10)
    index = np.frombuffer(snap.table_features, "<i4").tolist()
    assert snap.table_labels[index.index(7)] == "paths"
    assert m.state.labels == 2


@pytest.mark.parametrize("name", ["labels.json", "labels.jsonl", "labels.json.gz"])
def test_neuronpedia_export_files(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("\n".join(json.dumps(r) for r in NEURONPEDIA) + "\n")
    elif name.endswith(".gz"):
        path.write_bytes(gzip.compress(json.dumps(NEURONPEDIA).encode()))
    else:
        path.write_text(json.dumps(NEURONPEDIA))
    m = _monitor()
    assert m.set_labels(path) == 2
    assert m.get_statistics([3, 7]).features[0].label == "the word 'by'"  # first record counts
    assert m.get_statistics([3, 7]).features[1].label == "file paths"


def test_csv_and_json_object_files(tmp_path):
    csv_path = tmp_path / "labels.csv"
    m = _monitor()
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        m.set_labels(tmp_path / "missing.csv")
    csv_path.write_text('feature,description\n1,one\n2,"with, comma"\n')
    assert m.set_labels(csv_path) == 2
    assert m.get_statistics([2]).features[0].label == "with, comma"
    obj = tmp_path / "labels.json"
    obj.write_text(json.dumps({"4": "four"}))
    assert m.set_labels(obj) == 1 and m.get_statistics([1]).features[0].label is None


@pytest.mark.parametrize("labels, error, needle", [
    ({10: "x"}, ValueError, "feature index 10"),
    ({"x": "y"}, TypeError, "'x'"),
    ({1: 5}, TypeError, "label of feature 1"),
    (["not", "a", "dict"], TypeError, "dict or a file"),
])
def test_bad_labels_change_nothing(labels, error, needle):
    m = _monitor()
    m.set_labels({1: "kept"})
    with pytest.raises(error, match=needle):
        m.set_labels(labels)
    assert m.get_statistics([1]).features[0].label == "kept"


def test_long_labels_are_cut_in_the_snapshot_table_only():
    m = _monitor()
    m.set_labels({5: "x" * 300})
    assert m.get_statistics([5]).features[0].label == "x" * 300
    labels = [lab for lab in m.snapshot(table_rows=10).table_labels if lab]
    assert labels == ["x" * (TABLE_LABEL_CHARS - 1) + "…"]


def _refused_naming(m, path, *needles):
    m.set_labels({1: "kept"})
    with pytest.raises(ValueError) as info:
        m.set_labels(path)
    for needle in (str(path), *needles):
        assert needle in str(info.value)
    assert m.get_statistics([1]).features[0].label == "kept"


def test_a_small_gzip_that_expands_past_the_limit_is_refused(tmp_path, monkeypatch):
    from featmon_widget.monitor.query import labels as labels_module

    # The limit applies to what the file expands to, not to its compressed size.
    monkeypatch.setattr(labels_module, "MAX_LABEL_FILE_BYTES", 1 << 20)
    bomb = tmp_path / "bomb.json.gz"
    bomb.write_bytes(gzip.compress(b'{"1": "' + b"a" * (4 << 20) + b'"}'))
    assert bomb.stat().st_size < 64 << 10
    _refused_naming(_monitor(), bomb, "decompressed")


@pytest.mark.parametrize("name, content, needle", [
    ("truncated.json.gz", gzip.compress(b'{"1": "one"}' * 50)[:30], "gzip"),
    ("plain.json.gz", b'{"1": "one"}', "gzip"),
    ("deep.json", b"[" * 100_000 + b"]" * 100_000, "nested"),
    ("bad.jsonl", b'{"index": 1, "description": "ok"}\n{"index": 2,\n', "line 2"),
    ("latin1.csv", b"feature,description\n1,ok\n2,caf\xe9\n", "line 3"),
    ("superscript.json", json.dumps({"\u00b2": "two"}).encode(), "'\u00b2'"),
    ("broken.json", b'{"1": "one",\n "2": }', "line 2"),
    ("surrogate.json", b'{"1": "\\ud83d"}', "surrogate"),
    ("surrogate.jsonl", b'{"index": 1, "description": "\\ud83d"}\n', "line 1"),
])
def test_unreadable_label_files_raise_valueerror_naming_file_and_place(tmp_path, name, content,
                                                                       needle):
    path = tmp_path / name
    path.write_bytes(content)
    _refused_naming(_monitor(), path, needle)


def test_lone_surrogates_are_refused_where_text_enters(tmp_path):
    m = _monitor()
    with pytest.raises(ValueError, match="surrogate"):
        m.set_labels({1: "emoji \ud83d"})
    with pytest.raises(ValueError, match="request_id"):
        m.on_activation(torch.rand(2, 10), request_id="req-\ud83d")
    with pytest.raises(ValueError, match="request_id"), m.request("r\udc00"):
        m.on_activation(torch.rand(2, 10))
    assert m.state.labels == 0 and m.state.total_tokens == 4
    # so every export still works
    m.to_html(tmp_path / "page.html")
    m.history_frame()
