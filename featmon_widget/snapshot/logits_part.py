"""The "promotes / suppresses" part of a feature panel: a `LogitsResponse` made compact for
the frontend, and the steps that shrink it when the panels are over their byte budget."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..checks import cut
from ..types import LogitsResponse, LogitToken
from .options import PANEL_LOGIT_TOKEN_CHARS, PANEL_LOGITS, PANEL_LOGITS_BYTES, PANEL_LOGITS_MIN


def logits_part(response: LogitsResponse, rows: int = PANEL_LOGITS) -> dict[str, Any]:
    """`{"source", "top", "bottom", "lo", "hi", "counts"}`: `rows` tokens a side as
    `[token_id, text or None, value]` (text cut short, values to 4 significant digits), highest
    first in `top`, lowest first in `bottom`; the histogram's equal-width bins as the first and
    last edge (`lo`, `hi`) and the counts."""

    def compact(tokens: list[LogitToken]) -> list[list[Any]]:
        return [[t.token_id, cut(t.token, PANEL_LOGIT_TOKEN_CHARS), float(f"{t.value:.4g}")]
                for t in tokens[:rows]]

    return {"source": response.source, "top": compact(response.top),
            "bottom": compact(response.bottom), "lo": float(f"{response.edges[0]:.6g}"),
            "hi": float(f"{response.edges[-1]:.6g}"), "counts": list(response.counts)}


def with_logits(panels: list[dict[str, Any]],
                logits: Mapping[int, LogitsResponse]) -> list[dict[str, Any]]:
    """Each panel whose feature has logit effects gains `logits` (`logits_part`); all of them
    within `PANEL_LOGITS_BYTES` (else `PANEL_LOGITS_MIN` tokens a side, then parts dropped from
    the last panel). Panels of features without them get none."""
    for panel in panels:
        if panel["feature"] in logits:
            panel["logits"] = logits_part(logits[panel["feature"]])

    def size() -> int:
        return len(json.dumps([p.get("logits") for p in panels], ensure_ascii=False).encode())

    if size() > PANEL_LOGITS_BYTES:
        keep_logit_tokens(panels, PANEL_LOGITS_MIN)
    while size() > PANEL_LOGITS_BYTES and drop_logits(panels):
        pass
    return panels


def keep_logit_tokens(panels: list[dict[str, Any]], rows: int) -> None:
    """Keep at most `rows` tokens a side in every panel's logits part."""
    for panel in panels:
        part = panel.get("logits")
        if part is not None:
            part["top"], part["bottom"] = part["top"][:rows], part["bottom"][:rows]


def drop_logits(panels: list[dict[str, Any]]) -> bool:
    """Remove one panel's logits part (the last that has one); False when none has."""
    return any(panel.pop("logits", None) is not None for panel in reversed(panels))
