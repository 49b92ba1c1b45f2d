"""`/docs` without a CDN: FastAPI's Swagger page loads its scripts from the internet, so this
serves a plain HTML reference of the same OpenAPI schema (`/openapi.json`), drawn on the
server."""

from __future__ import annotations

import html
import json
from typing import Any


def _schema_name(schema: dict[str, Any] | None) -> str:
    if not schema:
        return ""
    ref = schema.get("$ref") or schema.get("items", {}).get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref else schema.get("type", "")


def docs_html(spec: dict[str, Any]) -> str:
    """One self-contained page: each route with its parameters, body and answer, then every
    schema."""
    esc = html.escape
    rows = []
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            params = ", ".join(f"{esc(p['name'])} ({esc(p['in'])})"
                               for p in op.get("parameters", []))
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ok = op.get("responses", {}).get("200", {}).get("content", {}).get(
                "application/json", {})
            rows.append(f"<tr><td><b>{esc(method.upper())}</b></td><td><code>{esc(path)}"
                        f"</code></td><td>{esc(op.get('summary', ''))}</td><td>{params}</td>"
                        f"<td>{esc(_schema_name(body.get('schema')))}</td>"
                        f"<td>{esc(_schema_name(ok.get('schema')))}</td></tr>")
    schemas = []
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        schemas.append(f"<h3 id='{esc(name)}'>{esc(name)}</h3><p>"
                       f"{esc(schema.get('description', ''))}</p><pre>"
                       f"{esc(json.dumps(schema.get('properties', {}), indent=1))}</pre>")
    info = spec.get("info", {})
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{esc(info.get('title', 'API'))}</title><style>body{{font-family:sans-serif;"
        "margin:2em}td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}"
        "pre{background:#f6f6f6;padding:8px;font-size:12px}</style></head><body>"
        f"<h1>{esc(info.get('title', 'API'))} {esc(info.get('version', ''))}</h1>"
        f"<p>{esc(info.get('description', ''))}</p><p>Machine-readable: "
        "<a href='openapi.json'>openapi.json</a>. Every route needs "
        "<code>Authorization: Bearer &lt;token&gt;</code>.</p>"
        "<table><tr><th>method</th><th>path</th><th>what</th><th>parameters</th>"
        "<th>body</th><th>answer</th></tr>" + "".join(rows) + "</table><h2>Schemas</h2>"
        + "".join(schemas) + "</body></html>")
