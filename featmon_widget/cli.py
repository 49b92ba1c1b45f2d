"""`featmon demo`: run the embedded default model over sample texts, print the top features
with the tokens they fire on, and write a self-contained HTML report (no CDN) with their
top-activating examples as shaded token text. `featmon export-html NOTEBOOK`: the notebook as
HTML with its monitor widgets' saved snapshots drawn offline. `featmon serve --demo`: the demo
model recording the offline corpus, served over REST + WebSocket (`featmon serve FOLDER`: a
saved monitor)."""

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


def serve(args: argparse.Namespace) -> int:
    """Serve the demo stream (or a saved monitor) until interrupted or `--duration` ends."""
    import time

    from .monitor import FeatureMonitor

    if args.demo == (args.folder is not None):
        print("featmon: serve needs --demo or a saved monitor's FOLDER (one of them)",
              file=sys.stderr)
        return 2
    token = "" if args.no_token else args.token
    stream = None
    if args.demo:
        from . import corpus
        from . import demo as demo_module

        bundle = demo_module.load()
        monitor = FeatureMonitor.for_sae(bundle.sae, throttle_ms=args.throttle_ms)
        monitor.attach(bundle.model, bundle.hook_point, bundle.sae, tokenizer=bundle.tokenizer)
        texts = corpus.sentences(args.sentences)
        stream = (bundle, texts)
    else:
        monitor = FeatureMonitor.load(args.folder)
    try:
        server = monitor.serve(args.host, args.port, token, cors_origins=args.cors or ())
    except (ValueError, OSError) as exc:
        print(f"featmon: {exc}", file=sys.stderr)
        return 1
    print(f"featmon: serving {server.url} (docs: {server.url}/docs; connect with "
          f"featmon_widget.serve.RemoteMonitor({server.url!r}, token=...))", flush=True)
    end = time.monotonic() + args.duration if args.duration else None
    batch = 0
    try:
        while end is None or time.monotonic() < end:
            if stream is None:
                time.sleep(0.2)
                continue
            bundle, texts = stream
            start = batch * args.batch % len(texts)
            with monitor.request(f"demo-{batch}"):
                bundle.run(texts[start:start + args.batch])
            batch += 1
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        monitor.close()
    print(f"featmon: served {batch} batches", flush=True)
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
    srv = sub.add_parser("serve", help="serve a monitor over REST + WebSocket")
    srv.add_argument("folder", type=Path, nargs="?", default=None,
                     help="a saved monitor's folder (instead of --demo)")
    srv.add_argument("--demo", action="store_true",
                     help="run the demo model over the offline corpus and serve its monitor")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8765, help="0: any free port")
    srv.add_argument("--token", default=None, help="default: a generated one, printed once")
    srv.add_argument("--no-token", action="store_true",
                     help="no token (refused unless the host is a loopback address)")
    srv.add_argument("--cors", action="append", help="an origin allowed by CORS (repeatable)")
    srv.add_argument("--batch", type=int, default=8, help="sentences per forward pass")
    srv.add_argument("--interval", type=float, default=0.5, help="seconds between passes")
    srv.add_argument("--sentences", type=int, default=2000, help="corpus sentences to cycle")
    srv.add_argument("--throttle-ms", type=float, default=100.0)
    srv.add_argument("--duration", type=float, default=0, help="stop after this many seconds")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "demo":
        return demo(args.out, args.k, args.examples, args.metric, args.text)
    if args.command == "export-html":
        return export_html(args.notebook, args.out)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
