"""What the widget needs from a monitor: a protocol (`FeatureMonitor` implements it), so the
widget never imports the monitor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ..live.subscriptions import Subscription
from ..snapshot.schemas import Snapshot
from ..types import MonitorState, ProbeResponse


@runtime_checkable
class MonitorControls(Protocol):
    """Snapshots to show and the operations the widget's buttons call."""

    def snapshot(self, table_rows: int = 50, metric: str = "mean",
                 records: int = 20) -> Snapshot:
        """A bounded snapshot now."""
        ...

    def subscribe(self, callback: Callable[[Snapshot], None], *, table_rows: int = 50,
                  metric: str = "mean", records: int = 20) -> Subscription:
        """Throttled snapshots to `callback`."""
        ...

    def configure(self, **changes: Any) -> MonitorState:
        """Change settings (raises ValueError/TypeError and changes nothing when invalid)."""
        ...

    def enable(self, flag: bool = True) -> MonitorState:
        """Record or pause."""
        ...

    def clear_history(self) -> int:
        """Empty the history."""
        ...

    def reset_statistics(self) -> int:
        """Zero the statistics."""
        ...

    def probe(self, texts: str | list[str], record: bool = False,
              features: list[int] | None = None, k: int = 5) -> ProbeResponse:
        """Run the attached model on `texts`: the features on each token (the test box)."""
        ...
