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
