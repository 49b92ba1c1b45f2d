"""MonitorWidget: the live Jupyter view of a monitor (anywidget + the bundled TS frontend)."""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from ..live.subscriptions import Subscription
from ..snapshot.options import snapshot_options
from ..snapshot.schemas import Snapshot
from .commands import CommandHandler
from .controls import MonitorControls

# Built by `npm run build` (esbuild bundles js/ here); shipped in the wheel.
STATIC = Path(__file__).resolve().parent.parent / "static"


class MonitorWidget(anywidget.AnyWidget):
    """Live histograms, a top-features table and controls for a `FeatureMonitor`.

    Snapshots arrive from the monitor's throttled delivery thread and are synced as one trait
    (numeric arrays travel as binary buffers). Button presses come back as custom messages;
    each is applied through the monitor's operations and answered with exactly one reply,
    carrying the monitor's error text if it was rejected (then nothing changed).
    """

    _esm = STATIC / "widget.js"
    _css = STATIC / "widget.css"

    snapshot = traitlets.Dict().tag(sync=True)

    # The live widget of each monitor, for `of`.
    _live: weakref.WeakKeyDictionary[Any, MonitorWidget] = weakref.WeakKeyDictionary()
    _live_lock = threading.Lock()

    @classmethod
    def of(cls, monitor: MonitorControls, **options: Any) -> MonitorWidget:
        """`monitor`'s live widget: the one made before while its view is open, else a new one
        (so re-running a cell does not start another subscription)."""
        with cls._live_lock:
            widget = cls._live.get(monitor)
            if widget is None or getattr(widget, "comm", None) is None:
                widget = cls._live[monitor] = cls(monitor, **options)
            return widget

    def __init__(self, monitor: MonitorControls, *, table_rows: int = 50, metric: str = "mean",
                 records: int = 20, **kwargs: Any) -> None:
        if not isinstance(monitor, MonitorControls):
            raise TypeError(f"MonitorWidget needs a FeatureMonitor, got {type(monitor).__name__}")
        snapshot_options(table_rows, metric, records)  # bad options: raise before a comm opens
        super().__init__(**kwargs)
        try:
            self.monitor = monitor
            self._push_lock = threading.Lock()
            self._last_sequence = 0
            self.on_msg(lambda _widget, content, _buffers: self.answer(content))
            self._subscription = monitor.subscribe(self.push, table_rows=table_rows,
                                                   metric=metric, records=records)
            self._commands = CommandHandler(monitor, self._subscription)
            self.push(monitor.snapshot(table_rows, metric, records))
        except BaseException:
            # A widget that failed to build stays registered nowhere (its layout child too).
            layout = getattr(self, "layout", None)
            self.close()
            if layout is not None:
                layout.close()
            raise

    @property
    def subscription(self) -> Subscription:
        """This widget's snapshot subscription (its table size, metric and records)."""
        return self._subscription

    # ---- kernel -> frontend -----------------------------------------------------------------

    def push(self, snap: Snapshot) -> None:
        """Sync one snapshot; an older one arriving late (another thread) is dropped."""
        with self._push_lock:
            if snap.sequence <= self._last_sequence:
                return
            self._last_sequence = snap.sequence
            with self.hold_sync():
                self.snapshot = snap.to_message()

    def refresh(self) -> None:
        """Send a fresh snapshot now, outside the throttle."""
        self.push(self.monitor.snapshot(*self._subscription.options()))

    # ---- frontend -> kernel -----------------------------------------------------------------

    def answer(self, content: Any) -> dict[str, Any]:
        """Apply one frontend command, send its reply (exactly one, whatever happens) and, if
        it was applied, a fresh snapshot; returns the reply."""
        reply = self._commands.reply(content)
        self.send(reply)
        if reply["ok"]:
            self.refresh()
        return reply

    def handle_command(self, content: Any) -> str:
        """Apply one frontend command; returns a short success message or raises with the
        reason (and then nothing changed)."""
        return self._commands.handle(content)

    # ---- static output ----------------------------------------------------------------------

    def figure(self) -> Any:
        """A plotly `go.Figure` of the same histograms and table, for static reports."""
        from ..snapshot.figure import snapshot_figure  # plotly is slow to import: on demand

        return snapshot_figure(self.monitor.snapshot(*self._subscription.options()))

    def close(self) -> None:
        """Stop receiving snapshots and close every view."""
        subscription = getattr(self, "_subscription", None)  # absent if __init__ failed early
        if subscription is not None:
            subscription.cancel()
        super().close()

    def __repr__(self) -> str:
        return f"MonitorWidget({self.monitor!r})"
