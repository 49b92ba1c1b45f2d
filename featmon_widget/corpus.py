"""Offline English prose: sentences from the standard library's docstrings and the Python
reference manual text, with
code, grammar rules, doctests and reST markup filtered out. The demo SAE was trained on such
text (`scripts/train_demo_sae.py`), and the quickstart streams it (`sentences`).
"""

from __future__ import annotations

import ast
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

FUNCTION_WORDS_TEXT = (
    "the a an is are to of and in for be this that it if with as or by on not from which will "
    "can when was its into has have may all any each no but should must used return returns"
)
FUNCTION_WORDS = frozenset(FUNCTION_WORDS_TEXT.split())
_SENTENCE_SPLIT = re.compile(r"(?<=[a-z0-9)\"'”*][.!?])\s+(?=[A-Z\"“(*])")
_CODE_LIKE = re.compile(r">>>|::=|==|->|[{}\\|$^~@#]|\s=\s|\.\.\.")
_UNDERLINE = re.compile(r"^[-=*~^\"#+]{3,}$")
_BULLET = re.compile(r"^(?:[-*+•]|\[\d+\]|\d+[.)]|\(\w\))\s+")


def _blocks(text: str) -> Iterator[str]:
    """Runs of lines with one indentation (a bullet's continuation lines included), joined.

    Blank lines, reST underlines, bullets and indentation changes end a block, so code
    examples, argument lists and grammar rules come out as blocks of their own.
    """
    current: list[str] = []
    indent: int | None = None
    for line in [*text.split("\n"), ""]:
        stripped = line.strip()
        here = len(line) - len(line.lstrip())
        bullet = _BULLET.match(stripped)
        if not stripped or _UNDERLINE.match(stripped) or bullet or here != indent:
            if current:
                yield " ".join(current)
            current, indent = [], None
            if not stripped or _UNDERLINE.match(stripped):
                continue
            if bullet:
                stripped = stripped[bullet.end():]
                indent = here + bullet.end()
            else:
                indent = here
        current.append(stripped)


def prose_sentences(text: str) -> Iterator[str]:
    """English prose sentences of a docstring or manual text; code-like text is dropped."""
    for block in _blocks(text):
        if block.startswith(("..", ":", ">>>", "%")):
            continue
        parts = _SENTENCE_SPLIT.split(block)
        for i, part in enumerate(parts):
            s = " ".join(part.split())
            words = s.split()
            if not 4 <= len(words) <= 80:
                continue
            if not (s[0].isupper() or s[0] in "\"“"):
                continue
            # A block's last sentence may lack the full stop (one-line docstrings often do).
            if not (s[-1] in ".!?" or (i == len(parts) - 1 and s[-1].isalnum())):
                continue
            if _CODE_LIKE.search(s):
                continue
            if not any(w.lower().strip(",;:.\"()") in FUNCTION_WORDS for w in words):
                continue
            if sum(c.isalpha() or c == " " for c in s) < 0.85 * len(s):
                continue
            yield s


_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test",
                        "__pycache__"})


def stdlib_files() -> list[Path]:
    """The standard library's ``.py`` files (no tests, no site-packages), sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return [p for p in sorted(root.rglob("*.py"))
            if not _SKIP_DIRS & set(p.relative_to(root).parts)]


def docstrings(path: Path) -> list[str]:
    """Module, class and function docstrings of one source file, parsed with ``ast``."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                found.append(doc)
    return found


def stdlib_sentences() -> Iterator[str]:
    for path in stdlib_files():
        for doc in docstrings(path):
            yield from prose_sentences(doc)


def pydoc_sentences() -> Iterator[str]:
    """Prose sentences of the reference manual text shipped with Python (`pydoc_data.topics`),
    in a fixed order."""
    from pydoc_data.topics import topics  # a data module: a dict of manual texts

    for key in sorted(topics):
        yield from prose_sentences(topics[key])


def sentences(n: int) -> list[str]:
    """The first `n` distinct prose sentences: the reference manual's (about two thousand),
    then the standard library's docstrings (read with `ast`, never imported)."""
    seen: dict[str, None] = {}
    for source in (pydoc_sentences, stdlib_sentences):
        for s in source():
            seen.setdefault(s)
            if len(seen) >= n:
                return list(seen)
    return list(seen)


# ------------------------------------------------------------------- everyday English
# Debian's `wordnet-base` (glosses and their example sentences) and `fortunes` (quotations):
# installed with apt, read from these folders; missing ones are reported, not fatal.
WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
_FORTUNE_SKIP = frozenset({"art", "ascii-art", "linuxcookie", "perl", "debian", "computers",
                           "startrek", "zippy"})


class MissingCorpus(RuntimeError):
    """A corpus source is not installed; the message says how to install it."""


def wordnet_files() -> list[Path]:
    """WordNet's four data files, or MissingCorpus when they are not all installed."""
    files = [WORDNET_DIR / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    if not all(f.is_file() for f in files):
        raise MissingCorpus(f"WordNet is not installed in {WORDNET_DIR} "
                            "(apt-get install wordnet-base)")
    return files


def fortune_files() -> list[Path]:
    """The fortunes' quotation files (a few non-prose ones left out), or MissingCorpus when
    none is installed."""
    files = sorted(p for p in FORTUNES_DIR.glob("*.u8") if p.stem not in _FORTUNE_SKIP) \
        if FORTUNES_DIR.is_dir() else []
    if not files:
        raise MissingCorpus(f"fortunes are not installed in {FORTUNES_DIR} "
                            "(apt-get install fortunes)")
    return files


def wordnet_sentences() -> Iterator[str]:
    """WordNet's glosses as sentences, and their quoted example sentences, in file order."""
    for path in wordnet_files():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or " | " not in line:
                continue  # the licence header
            gloss = line.split(" | ", 1)[1].strip()
            definition, *examples = (part.strip() for part in gloss.split(";"))
            for text in [definition, *(e.strip('"') for e in examples if e.startswith('"'))]:
                if text:
                    text = text[0].upper() + text[1:]
                    yield from prose_sentences(text if text[-1] in ".!?" else text + ".")


def fortune_sentences() -> Iterator[str]:
    """Sentences of the quotations in Debian's fortunes (attributions left out)."""
    for path in fortune_files():
        for entry in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            lines = [ln for ln in entry.splitlines() if not ln.strip().startswith("--")]
            yield from prose_sentences(" ".join(" ".join(lines).split()))
