"""The live Jupyter widget: `MonitorWidget` (anywidget, bundled frontend from js/), the commands
its buttons send, and the `MonitorControls` protocol it needs from a monitor."""

from .widget import MonitorWidget

__all__ = ["MonitorWidget"]
