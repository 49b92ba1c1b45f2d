"""MonitorWidget: the live Jupyter view of a FeatureMonitor (anywidget + bundled TS frontend)."""

from __future__ import annotations

import numbers
import threading
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from .monitor import FeatureMonitor
from .schemas import Snapshot

STATIC = Path(__file__).parent / "static"

# Settings the configure form may change; enabling and selection have their own commands.
FORM_SETTINGS = ("features", "history_size", "top_k", "threshold", "throttle_ms")


class CommandError(ValueError):
    """A frontend command that is malformed or was rejected by the monitor."""


class MonitorWidget(anywidget.AnyWidget):
    """Live histograms, a top-features table and controls for a `FeatureMonitor`.

    Snapshots arrive from the monitor's throttled delivery thread and are synced as one trait
    (numeric arrays travel as binary buffers). Button presses come back as custom messages;
    each is validated, applied through the monitor's operations and answered with a reply
    carrying the monitor's error text if it was rejected (then nothing changed).
    """

    _esm = STATIC / "widget.js"
    _css = STATIC / "widget.css"

    snapshot = traitlets.Dict().tag(sync=True)

    def __init__(self, monitor: FeatureMonitor, *, table_rows: int = 50, metric: str = "mean",
                 records: int = 20, **kwargs: Any) -> None:
        if not isinstance(monitor, FeatureMonitor):
            raise TypeError(f"MonitorWidget needs a FeatureMonitor, got {type(monitor).__name__}")
        super().__init__(**kwargs)
        self.monitor = monitor
        self._push_lock = threading.Lock()
        self._last_sequence = 0
        self.on_msg(self._on_command)
        self._subscription = monitor.subscribe(self._push, table_rows=table_rows, metric=metric,
                                               records=records)
        self._push(monitor.snapshot(table_rows, metric, records))

    # ---- kernel -> frontend -----------------------------------------------------------------

    def _push(self, snap: Snapshot) -> None:
        """Sync one snapshot; an older one arriving late (another thread) is dropped."""
        with self._push_lock:
            if snap.sequence <= self._last_sequence:
                return
            self._last_sequence = snap.sequence
            with self.hold_sync():
                self.snapshot = snap.to_message()

    def refresh(self) -> None:
        """Send a fresh snapshot now, outside the throttle."""
        self._push(self.monitor.snapshot(*self._subscription.options()))

    # ---- frontend -> kernel -----------------------------------------------------------------

    def _on_command(self, _widget: Any, content: Any, _buffers: Any) -> None:
        msg_id = content.get("id") if isinstance(content, dict) else None
        try:
            message = self.handle_command(content)
        except (CommandError, ValueError, TypeError) as exc:
            self.send({"type": "reply", "id": msg_id, "ok": False, "message": "",
                       "error": str(exc)})
            return
        self.send({"type": "reply", "id": msg_id, "ok": True, "message": message, "error": None})
        self.refresh()

    def handle_command(self, content: Any) -> str:
        """Apply one frontend command; returns a short success message or raises with the
        reason (and then nothing changed)."""
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            raise CommandError(f"a command must be an object with a 'type', got {content!r}")
        kind = content["type"]
        handler = getattr(self, f"_cmd_{kind}", None)
        if handler is None:
            raise CommandError(f"unknown command {kind!r}")
        return handler(content)

    def _cmd_configure(self, content: dict) -> str:
        changes = content.get("changes")
        if not isinstance(changes, dict) or not changes:
            raise CommandError(f"configure needs a non-empty 'changes' object, got {changes!r}")
        unknown = sorted(set(changes) - set(FORM_SETTINGS))
        if unknown:
            raise CommandError(f"configure cannot change {', '.join(unknown)}")
        self.monitor.configure(**changes)
        return "applied " + ", ".join(sorted(changes))

    def _cmd_enable(self, content: dict) -> str:
        flag = content.get("enabled")
        if not isinstance(flag, bool):
            raise CommandError(f"enable needs 'enabled': true or false, got {flag!r}")
        self.monitor.enable(flag)
        return "recording" if flag else "paused"

    def _cmd_clear_history(self, content: dict) -> str:
        return f"cleared {self.monitor.clear_history()} records"

    def _cmd_reset_statistics(self, content: dict) -> str:
        return f"reset statistics of {self.monitor.reset_statistics()} features"

    def _cmd_rank(self, content: dict) -> str:
        self._subscription.update(metric=content.get("metric"))
        return f"ranked by {self._subscription.metric}"

    def _cmd_select(self, content: dict) -> str:
        features = content.get("features")
        self.monitor.configure(selected=features)
        return f"showing {len(features)} histogram(s)"

    def _cmd_table_rows(self, content: dict) -> str:
        rows = content.get("rows")
        if isinstance(rows, numbers.Real) and not isinstance(rows, bool) and rows == int(rows):
            rows = int(rows)
        self._subscription.update(table_rows=rows)
        return f"showing {rows} rows"

    # ---- static output ----------------------------------------------------------------------

    def figure(self) -> Any:
        """A plotly `go.Figure` of the same histograms and table, for static reports."""
        from .figure import snapshot_figure

        return snapshot_figure(self.monitor.snapshot(*self._subscription.options()))

    def close(self) -> None:
        """Stop receiving snapshots and close every view."""
        subscription = getattr(self, "_subscription", None)  # absent if __init__ failed early
        if subscription is not None:
            subscription.cancel()
        super().close()

    def __repr__(self) -> str:
        return f"MonitorWidget({self.monitor!r})"
