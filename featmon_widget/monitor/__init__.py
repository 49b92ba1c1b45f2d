"""The monitor: `FeatureMonitor`, the facade that ties the rest together, and what it records.

Inside, features flow `ingest` (dense, sparse TopK, or encoded by an SAE) -> `stats/` (exact
running statistics) and `recording` (history ring, value histograms, positions, totals); the
read operations are answered by `queries`, snapshots are built from the `Recording` by
`featmon_widget.snapshot`, and `featmon_widget.live` delivers them.
"""

from .feature_monitor import FeatureMonitor

__all__ = ["FeatureMonitor"]
