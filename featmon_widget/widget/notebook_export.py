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

from ..checks import cut
from .static_page import snapshot_fragment

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_ID = "featmon_widget.widget.widget.MonitorWidget"  # anywidget's `_anywidget_id`


def saved_snapshots(metadata: Any, skipped: list[str] | None = None) -> dict[str, Any]:
    """model id -> the last snapshot (binary fields as `{"$base64": ...}`) of every monitor
    widget in a notebook's saved widget state. A widget whose saved state is malformed is left
    out, with one line saying why appended to `skipped`."""
    models = _get(_get(_get(metadata, "widgets"), WIDGET_STATE), "state")
    found = {}
    for model_id, entry in models.items():
        state = _get(entry, "state")
        if state.get("_anywidget_id") != WIDGET_ID:
            continue
        try:
            found[model_id] = _snapshot_of(state, entry.get("buffers", []))
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            if skipped is not None:
                skipped.append(f"widget {cut(str(model_id), 40)}: its saved state is malformed "
                               f"({cut(f'{type(exc).__name__}: {exc}', 120)})")
    return found


def _get(mapping: Any, key: str) -> dict[str, Any]:
    """`mapping[key]` when both are dicts, else an empty dict (saved state can be anything)."""
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return value if isinstance(value, dict) else {}


def _snapshot_of(state: dict[str, Any], buffers: Any) -> Any:
    snapshot = state.get("snapshot")
    if not isinstance(snapshot, dict):
        raise ValueError("no snapshot dict")
    message = copy.deepcopy(snapshot)
    if not isinstance(buffers, list):
        raise TypeError(f"buffers must be a list, got {type(buffers).__name__}")
    for buffer in buffers:
        path = buffer.get("path") or []
        if len(path) < 2 or path[0] != "snapshot" or buffer.get("encoding") != "base64":
            continue
        data = buffer.get("data")
        if not isinstance(data, str):
            raise TypeError(f"buffer {cut(repr(path), 60)} holds no base64 text")
        _put(message, path[1:], {"$base64": data})
    return message


def _put(message: Any, path: list[Any], value: Any) -> None:
    for key in path[:-1]:
        message = message[key]
    if not isinstance(message, (dict, list)):
        raise KeyError(f"buffer path {path!r} does not exist in the snapshot")
    message[path[-1]] = value


class StaticMonitorWidgets(Preprocessor):
    """Replace saved `MonitorWidget` outputs by a static, offline view of their snapshot. A
    widget whose saved state cannot be drawn keeps its output and is named in `skipped` (and
    in a one-line warning); the page is written either way."""

    def preprocess(self, nb: Any, resources: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """nbconvert's hook: rewrite the outputs in place (one copy of the bundle a page)."""
        self.skipped: list[str] = []
        if "widgets" in nb.metadata and not isinstance(
                _get(_get(nb.metadata, "widgets"), WIDGET_STATE).get("state"), dict):
            # nbconvert's own widget filter would fail on it: the page is written without it
            self.skipped.append("the notebook's saved widget state: it is malformed "
                                f"({type(nb.metadata['widgets']).__name__}), so no widget is "
                                f"drawn")
            del nb.metadata["widgets"]
        snapshots = saved_snapshots(nb.metadata, self.skipped)
        with_bundle = True
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                view = output.get("data", {}).get(WIDGET_VIEW)
                model_id = view.get("model_id") if isinstance(view, dict) else None
                if model_id not in snapshots:
                    continue
                try:
                    fragment = snapshot_fragment(snapshots[model_id], with_bundle=with_bundle)
                except (TypeError, ValueError, OverflowError, OSError) as exc:
                    # e.g. NaN in the state (not JSON), a timestamp no calendar holds
                    self.skipped.append(f"widget {cut(str(model_id), 40)}: its snapshot cannot "
                                        f"be drawn ({cut(f'{type(exc).__name__}: {exc}', 120)})")
                    del snapshots[model_id]
                    continue
                text = output["data"].get("text/plain", "")
                output["data"] = {"text/html": fragment, "text/plain": text}
                with_bundle = False
        for line in self.skipped:
            self.log.warning("featmon: skipped %s", line)
        self.drawn = len(snapshots)
        return nb, resources


def export_notebook(notebook: Path, out: Path) -> tuple[int, list[str]]:
    """Write `notebook` as HTML with its monitor widgets drawn offline; returns how many were
    drawn and a line for each widget skipped because its saved state is malformed."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    exporter = HTMLExporter()
    static = StaticMonitorWidgets()
    exporter.register_preprocessor(static, enabled=True)
    body, _ = exporter.from_notebook_node(nb)
    out.write_text(body, encoding="utf-8")
    return static.drawn, static.skipped
