"""`featmon demo`: run the embedded default model over sample texts, print the top features
with the tokens they fire on, and write a self-contained HTML report (no CDN) with their
top-activating examples as shaded token text."""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Sequence
from pathlib import Path

from .snapshot.schemas import METRICS


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
