"""The offline prose corpora: the standard library's text, and Debian's wordnet-base and
fortunes when installed (a clear message when they are not)."""

import pytest

from featmon_widget import corpus


def test_sentences_are_prose_and_come_in_a_fixed_order():
    first = corpus.sentences(50)
    assert first == corpus.sentences(50) and len(set(first)) == 50
    assert all(s[0].isupper() and len(s.split()) >= 4 for s in first)


def test_missing_everyday_sources_say_how_to_install_them(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus, "WORDNET_DIR", tmp_path / "wordnet")
    monkeypatch.setattr(corpus, "FORTUNES_DIR", tmp_path / "fortunes")
    with pytest.raises(corpus.MissingCorpus, match="apt-get install wordnet-base"):
        next(corpus.wordnet_sentences())
    with pytest.raises(corpus.MissingCorpus, match="apt-get install fortunes"):
        next(corpus.fortune_sentences())


def test_wordnet_and_fortunes_read_as_sentences(tmp_path, monkeypatch):
    wordnet = tmp_path / "wordnet"
    wordnet.mkdir()
    for pos in ("noun", "verb", "adj", "adv"):
        (wordnet / f"data.{pos}").write_text(
            "  1 This software and database is being provided to you, the LICENSEE\n"
            "00217499 04 n 01 disaster 0 001 @ 00217014 n 0000 | an act that has disastrous "
            'consequences; "the flood was a disaster for the whole town"  \n')
    fortunes = tmp_path / "fortunes"
    fortunes.mkdir()
    (fortunes / "wisdom.u8").write_text(
        "A clash of doctrine is not a disaster -- it is an opportunity.\n%\n"
        "Don't look back, something might be gaining on you.\n\t\t-- S. Paige\n%\n")
    monkeypatch.setattr(corpus, "WORDNET_DIR", wordnet)
    monkeypatch.setattr(corpus, "FORTUNES_DIR", fortunes)
    assert list(corpus.wordnet_sentences())[:2] == [
        "An act that has disastrous consequences.", "The flood was a disaster for the whole town."]
    assert list(corpus.fortune_sentences()) == [
        "A clash of doctrine is not a disaster -- it is an opportunity.",
        "Don't look back, something might be gaining on you."]
