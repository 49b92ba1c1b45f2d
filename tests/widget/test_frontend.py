"""The TypeScript frontend's own checks, run from pytest so the README's one test command
covers them: strict type-check and the vitest suite (jsdom, fake model)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.frontend


def _npm(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not on PATH: the frontend cannot be built or tested")
    if not (ROOT / "node_modules").exists():
        subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=ROOT, check=True,
                       timeout=timeout)
    return subprocess.run([npm, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_typescript_typechecks():
    result = _npm("run", "typecheck")
    assert result.returncode == 0, result.stdout + result.stderr


def test_vitest_suite_passes():
    result = _npm("test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and " failed" not in result.stdout
