import re
import shutil
import subprocess
from importlib import resources

import pytest

from featmon_widget.monitor.stats import backend
from featmon_widget.monitor.stats.protocol import HEADER


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """An empty kernel cache and no library loaded in this process, restored afterwards."""
    monkeypatch.setattr(backend, "_loaded", {})
    monkeypatch.setenv("FEATMON_CACHE_DIR", str(tmp_path))
    return tmp_path


def native_kernel(name: str):
    """The C kernel `name` (of `backend.KERNELS`), loaded whatever FEATMON_NATIVE says."""
    return backend.load_kernel(backend.KERNELS[name])


def vectorization_report(tmp_path, name: str) -> tuple[str, list[str]]:
    """gcc's vectorization report for kernel `name` built with its first choice of flags, and
    the kernel's source lines (the report names them by number)."""
    compiler = shutil.which("gcc")
    if compiler is None:
        pytest.skip("the vectorization report is gcc's")
    spec = backend.KERNELS[name]
    csrc = resources.files(backend.__package__).joinpath("csrc")
    for file in (spec.source, HEADER):
        (tmp_path / file).write_text(csrc.joinpath(file).read_text())
    report = subprocess.run([compiler, *spec.flags[0], "-fopt-info-vec-all", "-o",
                             str(tmp_path / "k.so"), str(tmp_path / spec.source)],
                            capture_output=True, text=True, check=True).stderr
    return report, (tmp_path / spec.source).read_text().splitlines()


def vectorized_loops(tmp_path, name: str) -> dict[str, list[int]]:
    """Per function of kernel `name` defined with VECTOR_CLONES, the loops gcc vectorized in
    each compiled clone (`vectorization_report`)."""
    spec = backend.KERNELS[name]
    report, lines = vectorization_report(tmp_path, name)
    out = {}
    for number, line in enumerate(lines, 1):
        match = re.search(r"VECTOR_CLONES[\w\s*]*\b(\w+)\(", line)
        if match and not line.lstrip().startswith(("/*", "#")):
            out[match[1]] = [int(n) for n in re.findall(
                rf"{re.escape(spec.source)}:{number}:\d+: note: vectorized (\d+) loops", report)]
    return out
