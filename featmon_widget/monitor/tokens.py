"""Token text for token ids, decoded only when read (never on the hot path)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

# A token's text is cut to this many characters wherever it is shown.
MAX_TOKEN_CHARS = 64
_CACHE_SIZE = 1 << 16


class TokenText:
    """Decodes single token ids with `tokenizer` (anything with `decode(list[int])`, e.g. a
    Hugging Face tokenizer), remembering the most recent ones."""

    def __init__(self, tokenizer: Any) -> None:
        if not callable(getattr(tokenizer, "decode", None)):
            raise TypeError(f"tokenizer must have a decode(ids) method, got "
                            f"{type(tokenizer).__name__}")
        self.tokenizer = tokenizer
        self._cache: OrderedDict[int, str] = OrderedDict()

    def __call__(self, token_id: int) -> str | None:
        """The text of `token_id`, or None for an unknown token (negative id)."""
        if token_id < 0:
            return None
        text = self._cache.get(token_id)
        if text is None:
            try:
                text = str(self.tokenizer.decode([token_id]))[:MAX_TOKEN_CHARS]
            except Exception:  # an id the tokenizer does not know: show the id instead
                text = f"<{token_id}>"
            self._cache[token_id] = text
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(token_id)
        return text


def no_text(token_id: int) -> None:
    """Token text when no tokenizer is known."""
    return None
