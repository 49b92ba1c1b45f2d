"""Argument checks shared by every layer: a bad value raises TypeError or ValueError naming the
parameter and the value, before anything changes; and `cut`, which bounds any text that
reaches a message."""

from __future__ import annotations

import numbers
from typing import Any


def cut(text: str | None, chars: int) -> str | None:
    """`text` at most `chars` characters long (the last one an ellipsis when cut); None stays
    None."""
    return text if text is None or len(text) <= chars else text[: chars - 1] + "…"


def is_int(value: Any) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value: Any, lo: int, hi: int) -> int:
    """`value` as an int in lo..hi, or a TypeError/ValueError naming `name` and the value."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, got {value!r}")
    return int(value)


def check_text(name: str, value: str) -> str:
    """`value` if it can be written as UTF-8; a ValueError naming `name` otherwise (a lone
    surrogate such as "\\ud83d" would be accepted here and fail later, at export time)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} holds a lone surrogate ({value[exc.start]!r} at character "
                         f"{exc.start}), which is not text") from None
    return value
