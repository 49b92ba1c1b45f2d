"""Notebook export with monitor widgets drawn offline: a widget whose saved state is malformed is
skipped with a one-line warning, and the page is still written with every other widget drawn."""

import base64
import copy
import math

import nbformat
import pytest
import torch

from featmon_widget import FeatureMonitor
from featmon_widget.cli import main
from featmon_widget.widget.notebook_export import WIDGET_ID, WIDGET_STATE, WIDGET_VIEW


def _widget_state(message):
    """A message as JupyterLab saves it: bytes fields as base64 buffers with their paths."""
    buffers = []

    def strip(value, path):
        if isinstance(value, bytes):
            buffers.append({"path": path, "encoding": "base64",
                            "data": base64.b64encode(value).decode()})
            return None
        if isinstance(value, dict):
            return {k: strip(v, [*path, k]) for k, v in value.items()}
        return value

    state = {"_anywidget_id": WIDGET_ID, "snapshot": strip(message, ["snapshot"])}
    return {"model_name": "AnyModel", "state": state, "buffers": buffers}


def _notebook(entries):
    nb = nbformat.v4.new_notebook()
    for model_id in entries:
        out = nbformat.v4.new_output("display_data", data={
            WIDGET_VIEW: {"model_id": model_id, "version_major": 2, "version_minor": 0},
            "text/plain": f"MonitorWidget {model_id}"})
        nb.cells.append(nbformat.v4.new_code_cell("monitor.widget()", outputs=[out]))
    nb.metadata["widgets"] = {WIDGET_STATE: {"state": entries, "version_major": 2,
                                             "version_minor": 0}}
    return nb


def _good():
    monitor = FeatureMonitor(16, compile=False)
    monitor.on_activation(torch.rand(8, 16))
    return _widget_state(monitor.snapshot().to_message())


def _bad(kind):
    entry = _good()
    snap = entry["state"]["snapshot"]
    if kind == "huge timestamp":
        snap["timestamp"] = 1e300
    elif kind == "nan in state":
        snap["never_fired"] = math.nan
    elif kind == "missing buffer path":
        entry["buffers"].append({"path": ["snapshot", "nope", "deeper"], "encoding": "base64",
                                 "data": ""})
    elif kind == "null buffer":
        entry["buffers"][0]["data"] = None
    elif kind == "buffers not a list":
        entry["buffers"] = {"0": 1}
    return entry


@pytest.mark.parametrize("kind", ["huge timestamp", "nan in state", "missing buffer path",
                                  "null buffer", "buffers not a list"])
def test_a_malformed_widget_is_skipped_and_the_page_written(tmp_path, capsys, kind):
    path = tmp_path / "nb.ipynb"
    nbformat.write(_notebook({"good": _good(), "bad": _bad(kind)}), str(path))
    assert main(["export-html", str(path)]) == 0
    out, err = capsys.readouterr()
    skipped = [line for line in err.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and "widget bad" in skipped[0]
    page = (tmp_path / "nb.html").read_text()
    assert page.count('data-testid="static-view"') == 1  # the good one is drawn
    assert "1 monitor widget(s)" in out


@pytest.mark.parametrize("widgets", [[], "a string", {"x": 1}, None])
def test_widget_metadata_of_any_shape_exports(tmp_path, capsys, widgets):
    nb = _notebook({"good": _good()})
    nb.metadata["widgets"] = widgets if widgets is not None else {WIDGET_STATE: None}
    path = tmp_path / "nb.ipynb"
    nbformat.write(copy.deepcopy(nb), str(path))
    assert main(["export-html", str(path)]) == 0
    assert "skipped the notebook's saved widget state" in capsys.readouterr().err
    assert "MonitorWidget good" in (tmp_path / "nb.html").read_text()  # its text stands in
