"""Token text: decoded when read, with the space a token has inside a text, cut short, cached,
and an id the tokenizer does not know shown as the id."""

import pytest

from featmon_widget.monitor.record import tokens
from featmon_widget.monitor.record.tokens import MAX_TOKEN_CHARS, TokenText, no_text


class WordPieceLike:
    """Decodes like WordPiece: words joined by spaces, '##' pieces glued to the one before."""

    vocab = {0: "a", 1: "affected", 2: "##able", 3: "x" * 100}

    def __init__(self):
        self.calls = 0

    def encode(self, text, add_special_tokens=True):
        return [0] if text == "a" else [0, 0]

    def decode(self, ids):
        self.calls += 1
        out = ""
        for i in ids:
            piece = self.vocab[i]  # KeyError for an unknown id
            out += piece[2:] if piece.startswith("##") else (" " if out else "") + piece
        return out


def test_a_token_keeps_the_space_it_has_inside_a_text():
    text = TokenText(WordPieceLike())
    assert text(1) == " affected"
    assert text(2) == "able"


def test_a_tokenizer_without_an_anchor_word_decodes_each_id_alone():
    class NoEncode(WordPieceLike):
        def encode(self, text, add_special_tokens=True):
            raise NotImplementedError

    assert TokenText(NoEncode())(1) == "affected"


def test_unknown_ids_and_long_tokens():
    text = TokenText(WordPieceLike())
    assert text(-1) is None
    assert text(77) == "<77>"
    assert len(text(3)) == MAX_TOKEN_CHARS


def test_decoded_text_is_cached_and_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(tokens, "_CACHE_SIZE", 2)
    tokenizer = WordPieceLike()
    text = TokenText(tokenizer)
    text(1)
    calls = tokenizer.calls
    assert text(1) == " affected" and tokenizer.calls == calls  # from the cache
    text(2)
    text(3)  # the cache holds two: 1 is the oldest and goes
    text(1)
    assert tokenizer.calls == calls + 3


def test_a_tokenizer_must_decode():
    with pytest.raises(TypeError, match="decode"):
        TokenText(object())
    assert no_text(5) is None
