"""A self-contained HTML report of a monitor: its top features with their labels, statistics
and top-activating examples as shaded token text, and the firing-frequency and value
histograms. No CDN: the small plotly bundle the widget ships is inlined."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .snapshot.figure import snapshot_figure

PLOTLY_BASIC = Path(__file__).resolve().parent / "static" / "plotly-basic.min.js"
STYLE = """body{font-family:sans-serif;margin:2em;max-width:70em}
td,th{padding:4px 8px;text-align:left;vertical-align:top;border-bottom:1px solid #ddd}
code{background:#f3f3f3}.ex{margin:2px 0;font-family:monospace;white-space:pre-wrap}
.tok{border-radius:2px}.act{outline:2px solid #d62728;font-weight:bold}
.val{display:inline-block;min-width:5em;color:#666}"""


def shade(activation: float | None, top: float) -> str:
    """An inline background for a token: orange, as strong as its activation against `top`."""
    if activation is None or not top > 0 or not activation > 0:
        return ""
    alpha = 0.12 + 0.68 * min(1.0, activation / top)
    return f"background:rgba(255,127,14,{alpha:.3f})"


def _example_html(example: Any) -> str:
    texts = example.tokens or [f"#{t}" for t in example.token_ids]
    top = max([example.value, *(a for a in example.activations if a is not None)])
    spans = []
    for i, text in enumerate(texts):
        activation = example.activations[i] if i < len(example.activations) else None
        title = "activation not kept" if activation is None else f"activation {activation:.4g}"
        cls = "tok act" if i == example.index else "tok"
        spans.append(f'<span class="{cls}" style="{shade(activation, top)}" '
                     f'title="{title}">{html.escape(text)}</span>')
    return (f'<div class="ex"><span class="val">{example.value:.3f}</span>'
            f'{"".join(spans) or "(tokens not known)"}</div>')


def report_html(monitor: Any, features: Sequence[int], title: str, intro: str = "",
                metric: str = "mean_active") -> str:
    """The report page for `features` (in that order) of `monitor`."""
    rows = []
    for feature in features:
        stats = monitor.get_statistics([feature]).features[0]
        found = monitor.get_examples(feature)
        label = f"<br><i>{html.escape(found.label)}</i>" if found.label else ""
        examples = "".join(_example_html(e) for e in found.examples) or "did not fire"
        rows.append(f"<tr><td>{feature}{label}</td><td>{stats.mean_active or 0:.4f}</td>"
                    f"<td>{(stats.active_ratio or 0):.4%}</td><td>{examples}</td></tr>")
    figure = snapshot_figure(monitor.snapshot(table_rows=20, metric=metric), table=False)
    if PLOTLY_BASIC.exists():  # the widget's small bundle (bar charts are all this needs)
        plotly = f"<script>{PLOTLY_BASIC.read_text(encoding='utf-8')}</script>"
        figure_html = figure.to_html(full_html=False, include_plotlyjs=False)
    else:  # a source checkout that never ran the npm build: plotly's full bundle, inlined
        plotly, figure_html = "", figure.to_html(full_html=False, include_plotlyjs=True)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style>{plotly}</head>
<body><h1>{html.escape(title)}</h1>
<p>{intro}</p>
<h2>Top features by {html.escape(metric)}, with their top-activating examples</h2>
<table><tr><th>feature</th><th>mean active</th><th>active ratio</th><th>examples (shaded by
activation; the activating token outlined)</th></tr>
{''.join(rows)}</table>
{figure_html}
</body></html>"""
