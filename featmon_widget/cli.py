"""`featmon demo`: run the embedded default model over sample texts, print the top features
with the tokens they fire on, and write a self-contained HTML report (no CDN)."""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Sequence
from pathlib import Path

from .snapshot.schemas import METRICS


def _report_html(bundle, monitor, examples, metric: str) -> str:
    from .snapshot.figure import snapshot_figure

    state = monitor.state
    rows = []
    for feature, found in examples.items():
        stats = monitor.get_statistics([feature]).features[0]
        tokens = ", ".join(f"<code>{html.escape(e.token)}</code> ({e.value:.3f}): "
                           f"{html.escape(e.context)}" for e in found) or "did not fire"
        rows.append(f"<tr><td>{feature}</td><td>{stats.mean_active or 0:.4f}</td>"
                    f"<td>{(stats.active_ratio or 0):.4%}</td><td>{tokens}</td></tr>")
    figure = snapshot_figure(monitor.snapshot(table_rows=20, metric=metric))
    figure_html = figure.to_html(full_html=False, include_plotlyjs=True)  # inline: no CDN
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>featmon report</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 8px;text-align:left;
vertical-align:top;border-bottom:1px solid #ddd}}code{{background:#f3f3f3}}</style></head>
<body><h1>featmon report</h1>
<p>Model <b>{html.escape(bundle.model_name)}</b>, SAE <b>{html.escape(str(state.sae_id))}</b>
(d_sae {state.d_sae}) at <code>{html.escape(bundle.hook_point)}</code>:
{state.total_tokens} tokens in {state.forward_passes} forward passes.</p>
<h2>Top features by {html.escape(metric)}, with the tokens they fire on</h2>
<table><tr><th>feature</th><th>mean active</th><th>active ratio</th><th>examples</th></tr>
{''.join(rows)}</table>
{figure_html}
</body></html>"""


def demo(out: Path, k: int, examples: int, metric: str, texts: Sequence[str] | None) -> int:
    """Run the demo; returns the process exit code."""
    from . import demo as demo_module
    from .monitor import FeatureMonitor

    bundle = demo_module.load()
    monitor = FeatureMonitor.for_sae(bundle.sae)
    texts = list(texts) if texts else bundle.texts
    with monitor.attach(bundle.model, bundle.hook_point, bundle.sae), monitor.request("demo"):
        found = demo_module.top_feature_examples(monitor, bundle, texts, k=k,
                                                 examples=examples, metric=metric)
    state = monitor.state
    print(f"{bundle.model_name} + SAE {state.sae_id} at {bundle.hook_point}: "
          f"{state.total_tokens} tokens, {len(texts)} texts")
    print(f"top {k} features by {metric}:")
    print(demo_module.format_examples(found))
    out.write_text(_report_html(bundle, monitor, found, metric), encoding="utf-8")
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `featmon` command."""
    parser = argparse.ArgumentParser(prog="featmon", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("demo", help="monitor the default model on sample texts")
    run.add_argument("--out", type=Path, default=Path("featmon-report.html"))
    run.add_argument("-k", type=int, default=8, help="how many top features")
    run.add_argument("--examples", type=int, default=3, help="example tokens per feature")
    run.add_argument("--metric", choices=METRICS, default="mean_active")
    run.add_argument("--text", action="append", help="a text to run (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.out, args.k, args.examples, args.metric, args.text)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
