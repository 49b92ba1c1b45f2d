"""The `probe` command's reply data: one probed text, bounded for the wire.

`{feature, tokens, values, top, labels, truncated}`: per token its text (cut short), the shaded
feature's value, and its top features as [feature, value]; the labels of every feature named
(cut short). Tokens past `PROBE_REPLY_TOKENS`, or past `PROBE_REPLY_BYTES` of JSON, are left
out and `truncated` says so.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..checks import cut
from ..types import ProbeResponse

# The text the test box may send, the tokens and bytes a reply may carry, token text and label
# characters, and top features per token.
PROBE_TEXT_CHARS = 1_000
PROBE_REPLY_TOKENS = 128
PROBE_REPLY_BYTES = 24_000
PROBE_TOKEN_CHARS = 16
PROBE_LABEL_CHARS = 40
PROBE_TOP = 5


def _short(value: float) -> float | None:
    # float32 activations: four significant digits shade and list them well enough.
    return float(f"{value:.4g}") if math.isfinite(value) else None


def probe_data(response: ProbeResponse, feature: int | None) -> dict[str, Any]:
    """The reply data of a one-text `response`, shaded by `feature` (None: no shading)."""
    (text,) = response.texts
    ids = text.token_ids
    n = min(len(ids), PROBE_REPLY_TOKENS)
    values = text.activations.get(feature) if feature is not None else None
    tokens = [cut(t, PROBE_TOKEN_CHARS) if t is not None else f"#{i}"
              for t, i in zip(text.tokens[:n], ids[:n], strict=True)]
    data: dict[str, Any] = {
        "feature": feature,
        "tokens": tokens,
        "values": [None] * n if values is None else [_short(v) for v in values[:n]],
        "top": [[[f, _short(v)] for f, v in top[:PROBE_TOP]] for top in text.top_features[:n]],
        "truncated": n < len(ids),
    }
    while _size(data) > PROBE_REPLY_BYTES - 4_000 and data["tokens"]:  # room for labels
        for key in ("tokens", "values", "top"):
            data[key].pop()
        data["truncated"] = True
    named = {f for top in data["top"] for f, _ in top} | ({feature} - {None})
    data["labels"] = {str(f): cut(response.labels[f], PROBE_LABEL_CHARS)
                      for f in sorted(named) if f in response.labels}
    while _size(data) > PROBE_REPLY_BYTES and data["labels"]:
        data["labels"].popitem()
    return data


def _size(data: dict[str, Any]) -> int:
    return len(json.dumps(data, ensure_ascii=False).encode())
