"""Test tiers and shared fixtures.

Every test is sorted into a tier here, so `python -m pytest -m fast` runs the unit tests only
and plain `python -m pytest` runs everything. A test is *fast* unless it carries one of the
`HEAVY` markers, which come either from where it lives (a whole folder or file of one kind,
`BY_LOCATION`) or from the test itself (`@pytest.mark.slow` and the like). A new file under
tests/browser/ is a browser test without saying so; notebooks (nbval) are never fast.
"""

import os
import sys

import pytest

# Tests use the eager statistics path unless they ask for compilation: compiling costs seconds.
os.environ.setdefault("FEATMON_COMPILE", "0")
sys.path.insert(0, os.path.dirname(__file__))

from virtual_time import ManualClock  # noqa: E402  (found through the path just added)

# Markers that keep a test out of the fast tier (all registered in pyproject.toml).
HEAVY = ("browser", "notebook", "packaging", "soak", "slow", "distributed", "frontend")
# Paths relative to the repository root (a folder ends with "/") and the marker they get.
BY_LOCATION = {
    "tests/browser/": "browser",  # Chromium (apt-get installs it) against real Jupyter servers
    "notebooks/": "notebook",  # executed by nbval, outputs compared
    "tests/monitor/io/test_sync.py": "distributed",  # gloo jobs under torchrun
}


def _location_marker(relpath: str) -> str | None:
    for where, marker in BY_LOCATION.items():
        if relpath == where or (where.endswith("/") and relpath.startswith(where)):
            return marker
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Add the location markers, then `fast` to every test without a heavy marker."""
    root = config.rootpath
    for item in items:
        try:
            relpath = item.path.relative_to(root).as_posix()
        except ValueError:  # collected from outside the repository
            relpath = item.path.as_posix()
        marker = _location_marker(relpath)
        if marker is not None:
            item.add_marker(marker)
        if not any(item.get_closest_marker(name) for name in HEAVY):
            item.add_marker("fast")


@pytest.fixture
def manual_clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    """A `ManualClock` that every throttle made during the test uses (a monitor's delivery
    thread included): time stands still until the test advances it."""
    from featmon_widget.live import clock as live_clock

    clock = ManualClock()
    monkeypatch.setattr(live_clock, "DEFAULT", clock)
    return clock
