"""`featmon demo`: run the embedded default model over sample texts, print the top features
with the tokens they fire on, and write a self-contained HTML report (no CDN) with their
top-activating examples as shaded token text. `featmon export-html NOTEBOOK`: the notebook as
HTML with its monitor widgets' saved snapshots drawn offline."""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Sequence
from pathlib import Path

from .types import METRICS


def demo(out: Path, k: int, examples: int, metric: str, texts: Sequence[str] | None) -> int:
    """Run the demo; returns the process exit code."""
    from . import demo as demo_module
    from .monitor import FeatureMonitor
    from .report import report_html

    bundle = demo_module.load()
    monitor = FeatureMonitor.for_sae(bundle.sae)
    texts = list(texts) if texts else bundle.texts
    with monitor.attach(bundle.model, bundle.hook_point, bundle.sae, tokenizer=bundle.tokenizer):
        found = demo_module.top_feature_examples(monitor, bundle, texts, k=k,
                                                 examples=examples, metric=metric)
    state = monitor.state
    print(f"{bundle.model_name} + SAE {state.sae_id} at {bundle.hook_point}: "
          f"{state.total_tokens} tokens, {len(texts)} texts")
    print(f"top {k} features by {metric}:")
    print(demo_module.format_examples(found))
    intro = (f"Model <b>{html.escape(bundle.model_name)}</b>, SAE "
             f"<b>{html.escape(str(state.sae_id))}</b> (d_sae {state.d_sae}) at "
             f"<code>{html.escape(bundle.hook_point)}</code>: {state.total_tokens} tokens in "
             f"{state.forward_passes} forward passes.")
    out.write_text(report_html(monitor, list(found), "featmon report", intro, metric),
                   encoding="utf-8")
    print(f"wrote {out}")
    return 0


def export_html(notebook: Path, out: Path | None) -> int:
    """Write a notebook as HTML with its monitor widgets' saved snapshots drawn offline."""
    try:
        from .widget.notebook_export import export_notebook
    except ImportError as exc:
        print(f"featmon: export-html needs nbconvert ({exc}): pip install "
              "'featmon_widget[export]'", file=sys.stderr)
        return 1
    if not notebook.is_file():
        print(f"featmon: no such notebook: {notebook}", file=sys.stderr)
        return 1
    target = out or notebook.with_suffix(".html")
    count, skipped = export_notebook(notebook, target)
    for line in skipped:
        print(f"featmon: skipped {line}", file=sys.stderr)
    print(f"wrote {target} ({count} monitor widget(s) with a saved snapshot)")
    if count == 0:
        print("featmon: the notebook holds no saved MonitorWidget state; save it with widget "
              "state (JupyterLab: Settings > Save Widget State Automatically)", file=sys.stderr)
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
    export = sub.add_parser("export-html", help="a notebook as HTML, monitor widgets offline")
    export.add_argument("notebook", type=Path)
    export.add_argument("-o", "--out", type=Path, default=None,
                        help="the HTML file (default: the notebook's name with .html)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.out, args.k, args.examples, args.metric, args.text)
    if args.command == "export-html":
        return export_html(args.notebook, args.out)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
