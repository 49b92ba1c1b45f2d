"""The docs site: it builds with --strict, references every public name, works offline, and
the guide's code runs against the current API."""

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import featmon_widget

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# Python blocks are executed page by page (one namespace a page, in order), so the docs cannot
# drift from the API. A block that cannot run here starts with this comment and says why.
NOT_RUN = "# not run:"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# Words that tell history rather than what the software does now.
HISTORY = re.compile(r"\b(issue \d+|this session|no longer|used to|previously|was fixed)\b", re.I)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "", "HOME": str(out)})
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_every_public_name_is_in_the_api_reference(site: Path):
    page = (site / "reference" / "api" / "index.html").read_text()
    ids = set(re.findall(r'id="featmon_widget\.(?:[a-z_]+\.)*([A-Za-z_]+)"', page))
    missing = sorted(set(featmon_widget.__all__) - ids)
    assert missing == []


class _Assets(HTMLParser):
    """Every URL a page loads by itself (scripts, styles, images, frames)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("script", "img", "iframe", "source") and found.get("src"):
            self.urls.append(found["src"] or "")
        if tag == "link" and found.get("rel") in ("stylesheet", "preload", "icon") \
                and found.get("href"):
            self.urls.append(found["href"] or "")


def test_the_built_site_loads_nothing_from_the_network(site: Path):
    remote = []
    for page in site.rglob("*.html"):
        parser = _Assets()
        parser.feed(page.read_text())
        remote += [f"{page.relative_to(site)}: {u}" for u in parser.urls
                   if re.match(r"^(https?:)?//", u)]
    assert remote == []
    assert "fonts.googleapis" not in "".join(p.read_text() for p in site.rglob("*.html"))


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if FENCE.search(p.read_text()))


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_the_code_of_each_page_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for block in FENCE.findall(page.read_text()):
        if block.lstrip().startswith(NOT_RUN):
            continue
        exec(compile(block, str(page), "exec"), namespace)  # noqa: S102 (our own docs)


def test_the_docs_tell_what_the_software_does_now():
    told = [f"{p.relative_to(DOCS)}: {m.group(0)!r}" for p in DOCS.rglob("*.md")
            for m in HISTORY.finditer(p.read_text())]
    assert told == []
