"""Notebooks as HTML with each monitor widget's last snapshot drawn offline.

nbconvert shows widget outputs through a widget manager (and anywidget) fetched from a CDN when
the page is opened, so without the network they show nothing. `StaticMonitorWidgets`, an
nbconvert preprocessor, replaces each `MonitorWidget` output whose state the notebook saved
(JupyterLab's "Save Widget State Automatically", or nbclient's execution) with
`static_page.snapshot_fragment` of the snapshot in that state: the same frontend, inlined, with
its controls answering that they need a kernel. Other widgets are left as they are.

    featmon export-html notebook.ipynb
    jupyter nbconvert --to html --HTMLExporter.preprocessors='["featmon_widget.widget.\
notebook_export.StaticMonitorWidgets"]' notebook.ipynb   (one line)
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from nbconvert.preprocessors import Preprocessor

from .static_page import snapshot_fragment

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_ID = "featmon_widget.widget.widget.MonitorWidget"  # anywidget's `_anywidget_id`


def saved_snapshots(metadata: dict[str, Any]) -> dict[str, Any]:
    """model id -> the last snapshot (binary fields as `{"$base64": ...}`) of every monitor
    widget in a notebook's saved widget state."""
    models = metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    found = {}
    for model_id, entry in models.items():
        state = entry.get("state", {}) if isinstance(entry, dict) else {}
        if state.get("_anywidget_id") != WIDGET_ID or not isinstance(state.get("snapshot"), dict):
            continue
        message = copy.deepcopy(state["snapshot"])
        for buffer in entry.get("buffers", []):
            path = buffer.get("path") or []
            if len(path) < 2 or path[0] != "snapshot" or buffer.get("encoding") != "base64":
                continue
            _put(message, path[1:], {"$base64": buffer.get("data", "")})
        found[model_id] = message
    return found


def _put(message: Any, path: list[Any], value: Any) -> None:
    for key in path[:-1]:
        message = message[key]
    message[path[-1]] = value


class StaticMonitorWidgets(Preprocessor):
    """Replace saved `MonitorWidget` outputs by a static, offline view of their snapshot."""

    def preprocess(self, nb: Any, resources: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """nbconvert's hook: rewrite the outputs in place (one copy of the bundle a page)."""
        snapshots = saved_snapshots(nb.metadata)
        with_bundle = True
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                view = output.get("data", {}).get(WIDGET_VIEW)
                model_id = view.get("model_id") if isinstance(view, dict) else None
                if model_id not in snapshots:
                    continue
                text = output["data"].get("text/plain", "")
                output["data"] = {"text/html": snapshot_fragment(snapshots[model_id],
                                                                 with_bundle=with_bundle),
                                  "text/plain": text}
                with_bundle = False
        return nb, resources


def export_notebook(notebook: Path, out: Path) -> int:
    """Write `notebook` as HTML with its monitor widgets drawn offline; returns how many."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    count = len(saved_snapshots(nb.metadata))
    exporter = HTMLExporter()
    exporter.register_preprocessor(StaticMonitorWidgets(), enabled=True)
    body, _ = exporter.from_notebook_node(nb)
    out.write_text(body, encoding="utf-8")
    return count
