"""Token text for token ids, decoded only when read (never on the hot path)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

# A token's text is cut to this many characters wherever it is shown.
MAX_TOKEN_CHARS = 64
_CACHE_SIZE = 1 << 16


class TokenText:
    """Decodes single token ids with `tokenizer` (anything with `decode(list[int])`, e.g. a
    Hugging Face tokenizer), remembering the most recent ones.

    A token is decoded after a plain word and that word's text is taken off, so it keeps the
    space it has inside a text: WordPiece's `affected` reads " affected" and `##able` "able",
    like BPE's "Ġthe" reads " the"; tokens then join into readable text.
    """

    def __init__(self, tokenizer: Any) -> None:
        if not callable(getattr(tokenizer, "decode", None)):
            raise TypeError(f"tokenizer must have a decode(ids) method, got "
                            f"{type(tokenizer).__name__}")
        self.tokenizer = tokenizer
        self._cache: OrderedDict[int, str] = OrderedDict()
        self._anchor = _plain_word(tokenizer)

    def __call__(self, token_id: int) -> str | None:
        """The text of `token_id`, or None for an unknown token (negative id)."""
        if token_id < 0:
            return None
        text = self._cache.get(token_id)
        if text is None:
            try:
                text = self._decode(token_id)[:MAX_TOKEN_CHARS]
            except Exception:  # an id the tokenizer does not know: show the id instead
                text = f"<{token_id}>"
            self._cache[token_id] = text
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(token_id)
        return text


    def _decode(self, token_id: int) -> str:
        if self._anchor is not None:
            anchor, prefix = self._anchor
            both = str(self.tokenizer.decode([anchor, token_id]))
            if both.startswith(prefix):
                return both[len(prefix):]
        return str(self.tokenizer.decode([token_id]))


def _plain_word(tokenizer: Any) -> tuple[int, str] | None:
    """A token id for the word "a" and its text, when the tokenizer can say."""
    try:
        ids = tokenizer.encode("a", add_special_tokens=False)
        anchor = int(ids[0]) if len(ids) == 1 else None
        return None if anchor is None else (anchor, str(tokenizer.decode([anchor])))
    except Exception:
        return None


def no_text(token_id: int) -> None:
    """Token text when no tokenizer is known."""
    return None
