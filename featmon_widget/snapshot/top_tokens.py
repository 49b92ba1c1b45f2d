"""Top tokens: a short automatic descriptor of a feature without a label, its most frequent
activating tokens among its kept top examples (the token each example is at), with counts.
Shown as "top tokens", never as a label; computed when read (queries, snapshots), never on the
hot path."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from ..checks import cut

# Tokens listed per feature, and the characters of each token's text.
TOP_TOKENS = 3
TOP_TOKEN_CHARS = 16


def top_tokens(ids: list[int], token_text: Callable[[int], str | None]
               ) -> list[tuple[str, int]] | None:
    """The `TOP_TOKENS` most frequent known token ids of `ids` (the examples' tokens, best
    example first; -1 unknown) as (text, count), most frequent first, ties to the one in the
    better example; a token without text reads `#<id>`. None when no token is known."""
    counts = Counter(i for i in ids if i >= 0)  # insertion order: the better example first
    if not counts:
        return None
    best = sorted(counts.items(), key=lambda item: -item[1])[:TOP_TOKENS]  # stable
    return [(cut(token_text(i), TOP_TOKEN_CHARS) or f"#{i}", n) for i, n in best]


def descriptors(features: list[int], ids: list[list[int]], labels: dict[int, str],
                token_text: Callable[[int], str | None]) -> list[list[tuple[str, int]] | None]:
    """Per feature (with its examples' token ids `ids[i]`): its top tokens when it has no
    label, else None."""
    return [None if f in labels else top_tokens(row, token_text)
            for f, row in zip(features, ids, strict=True)]
