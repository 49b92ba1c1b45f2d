"""The snapshot sent to the frontend: bounded, versioned, binary where it can be.

The TypeScript frontend mirrors `Snapshot.to_message()`, and the names and limits it needs are
generated from the Python side (`scripts/generate_protocol.py`). The monitor's other results
are in `featmon_widget.types`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..types import METRICS, MonitorState

SNAPSHOT_VERSION = 1

__all__ = ["METRICS", "SNAPSHOT_VERSION", "Snapshot"]


@dataclass(frozen=True)
class Snapshot:
    """Everything the frontend draws, bounded in size for any d_sae.

    Numeric arrays are little-endian bytes: float32 for edges, int32 for indices and bin counts
    bounded by d_sae, float64 where exactness matters (table statistics, value-bin counts that
    can pass 2^31). `to_message()` keeps them as bytes so widget state sends binary buffers.
    """

    sequence: int
    timestamp: float
    state: MonitorState
    table_metric: str
    table_features: bytes  # int32 [rows]
    table_columns: dict[str, bytes]  # float64 [rows] each; NaN where undefined
    frequency_edges: bytes  # float32 [bins + 1], log10(active_ratio)
    frequency_counts: bytes  # int32 [bins]
    never_fired: int
    never_seen: int
    value_features: bytes  # int32 [selected]
    value_edges: bytes  # float32 [log bins + 1]; bin 0 (inactive) has no edges
    value_counts: bytes  # float64 [selected, 1 + log bins]
    records: list[dict[str, Any]] = field(default_factory=list)
    table_labels: list[str | None] = field(default_factory=list)  # per table row, cut short
    table_search: str = ""  # the search that chose the table's features ("" for none)
    # Per table row without a label: its top tokens, [text, count] pairs (None: labelled or
    # unknown). An automatic descriptor from the kept examples, never a human label.
    table_top_tokens: list[list[list[str | int]] | None] = field(default_factory=list)
    # Per selected feature: label, count, active_ratio, mean_active, max, and its best examples
    # (value, request_id, row, position, index, tokens (or token_ids without a tokenizer),
    # activations).
    feature_panels: list[dict[str, Any]] = field(default_factory=list)
    # Health strip, drift view (with a reference) and watch marks: `health` (L0, MSE, FVU,
    # cosine, dead, ultra-rare), `drift` (divergence, hot and cold [feature, log_ratio, z]),
    # `watched` (features), `watch_hits`.
    oversight: dict[str, Any] = field(default_factory=dict)
    version: int = SNAPSHOT_VERSION

    def to_message(self) -> dict[str, Any]:
        """A dict of JSON values and bytes, ready for a widget trait."""
        msg = asdict(self)
        msg["state"] = self.state.to_dict()
        return msg

    def nbytes(self) -> int:
        """Bytes on the wire: the JSON part plus the binary buffers."""
        buffers: list[int] = []

        def strip(value: Any) -> Any:
            if isinstance(value, bytes):
                buffers.append(len(value))
                return None
            if isinstance(value, dict):
                return {k: strip(v) for k, v in value.items()}
            if isinstance(value, list):
                return [strip(v) for v in value]
            return value

        # Jupyter sends messages as UTF-8 JSON (ensure_ascii off).
        text = json.dumps(strip(self.to_message()), allow_nan=False, default=str,
                          ensure_ascii=False)
        return len(text.encode()) + sum(buffers)
