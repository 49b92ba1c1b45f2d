"""The widget as static HTML: one saved snapshot drawn by the widget's own frontend, with the
bundle, its styles and the data inlined, so the page needs neither a kernel nor the network.

The bundle travels as a JSON string (so no `</script>` inside it can end the element), is
imported once per page from a blob URL, and its `renderStatic` draws each snapshot; binary
fields are `{"$base64": ...}` in the page's JSON.
"""

from __future__ import annotations

import base64
import html
import json
import time
import uuid
from pathlib import Path
from typing import Any

STATIC = Path(__file__).resolve().parent.parent / "static"
BUNDLE_ID = "featmon-bundle"
_NOTE = "Saved snapshot{when}: the view is static; its controls need a running kernel."


def page_json(message: Any) -> Any:
    """A snapshot message (`Snapshot.to_message()`) with every bytes field as
    `{"$base64": ...}`, ready for `json.dumps`."""
    if isinstance(message, (bytes, bytearray, memoryview)):
        return {"$base64": base64.b64encode(bytes(message)).decode("ascii")}
    if isinstance(message, dict):
        return {k: page_json(v) for k, v in message.items()}
    if isinstance(message, (list, tuple)):
        return [page_json(v) for v in message]
    return message


def bundle_elements() -> str:
    """The frontend bundle and its styles, once per page."""
    source = (STATIC / "widget.js").read_text(encoding="utf-8")
    css = (STATIC / "widget.css").read_text(encoding="utf-8")
    return (f'<style>{css}</style>\n<script type="application/json" id="{BUNDLE_ID}">'
            f"{_script_json(source)}</script>\n")


def snapshot_fragment(message: Any, *, with_bundle: bool = True) -> str:
    """HTML that draws one snapshot: a note, the view, its data and the script that renders
    it; `message` as `page_json` gives it. `with_bundle=False` when the page already holds
    the bundle (one copy serves every view of a page)."""
    view_id = f"featmon-static-{uuid.uuid4().hex[:12]}"
    timestamp = message.get("timestamp") if isinstance(message, dict) else None
    when = (f" of {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(timestamp))}"
            if isinstance(timestamp, (int, float)) else "")
    bundle, view, data = (json.dumps(x) for x in (BUNDLE_ID, view_id, view_id + "-data"))
    script = (
        f"const source = document.getElementById({bundle});\n"
        "window.featmonStatic ??= import(URL.createObjectURL(new Blob("
        "[JSON.parse(source.textContent)], {type: 'text/javascript'})));\n"
        "const {renderStatic} = await window.featmonStatic;\n"
        f"renderStatic(document.getElementById({view}), "
        f"JSON.parse(document.getElementById({data}).textContent));\n"
    )
    return (
        (bundle_elements() if with_bundle else "")
        + f'<div class="featmon-static-note" data-testid="static-note" style="font: 12px '
        f'sans-serif; opacity: .7; margin: 4px 0">{html.escape(_NOTE.format(when=when))}</div>\n'
        f'<div id="{view_id}" data-testid="static-view"></div>\n'
        f'<script type="application/json" id="{view_id}-data">{_script_json(message)}</script>\n'
        f'<script type="module">\n{script}</script>\n'
    )


def standalone_page(message: Any, title: str = "featmon snapshot") -> str:
    """A complete HTML document showing one snapshot (`message` as `page_json` gives it)."""
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title></head>\n<body style=\"margin: 16px\">\n"
            f"{snapshot_fragment(message)}</body></html>\n")


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element: `<`, `>` and `&` escaped as unicode escapes."""
    text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
