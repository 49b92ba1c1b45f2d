"""What the C kernels share with Python is declared once (`stats/protocol.py` and each wrapper's
`C_FUNCTIONS`): the generated header is current and a hand edit fails the check, every C file
includes it and defines no code of its own, the compiler holds each definition to its
prototype, and the ctypes signatures come from the same declarations."""

import ctypes
import importlib.util
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from featmon_widget.monitor.stats import protocol
from featmon_widget.monitor.stats.backend import KERNELS, load_kernel, protocol_header
from featmon_widget.monitor.stats.protocol import HEADER, CFunction

ROOT = Path(__file__).resolve().parents[3]
CSRC = Path(str(resources.files(protocol.__package__).joinpath("csrc")))


def _script():
    spec = importlib.util.spec_from_file_location(
        "generate_protocol", ROOT / "scripts" / "generate_protocol.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_checked_in_header_is_the_generated_one():
    assert (CSRC / HEADER).read_text() == protocol_header()


def test_a_hand_edited_header_fails_the_check(tmp_path, monkeypatch, capsys):
    script = _script()
    assert script.main(["--check"]) == 0
    edited = tmp_path / HEADER
    edited.write_text(protocol_header().replace("SCAN_BINS = 32", "SCAN_BINS = 33"))
    monkeypatch.setattr(script, "HEADER", edited)
    assert script.main(["--check"]) == 1
    assert "featmon_protocol.h is stale or was edited by hand" in capsys.readouterr().err


def test_the_header_holds_the_python_codes():
    text = protocol_header()
    assert "SCAN_BINS = 32" in text and f"RECORD = {protocol.RECORD}" in text
    for name, code in protocol.METRIC_CODES.items():
        assert f"METRIC_{name.upper()} = {code}," in text
    assert "DTYPE_F32 = 0, DTYPE_BF16 = 1, DTYPE_F16 = 2" in text
    assert "KIND_F32 = 0, KIND_BF16 = 1, KIND_TOPK = 2" in text
    assert 'target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")' in text
    for spec in KERNELS.values():
        for fn in spec.wrapper.C_FUNCTIONS:
            assert fn.prototype() in text


@pytest.mark.parametrize("source", sorted(spec.source for spec in KERNELS.values()))
def test_every_kernel_includes_the_header_and_defines_no_code_of_its_own(source):
    text = (CSRC / source).read_text()
    assert f'#include "{HEADER}"' in text
    assert "#define VECTOR_CLONES" not in text and "target_clones" not in text
    # The shared codes' names are the header's alone.
    for code in ("F32", "BF16", "F16", "ACT_NONE", "ACT_JUMP", "BINS", "RECORD", "STORED",
                 "MEAN", "STD"):
        assert not re.search(rf"enum\s*{{[^}}]*\b{code}\s*[=,}}]", text), code


def test_a_definition_that_differs_from_its_prototype_does_not_compile(tmp_path):
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler")
    shutil.copy(CSRC / "feature_scans.c", tmp_path)
    wrong = protocol_header().replace("int featmon_top_k(const double *values, int64_t n",
                                      "int featmon_top_k(const double *values, int n")
    assert wrong != protocol_header()
    (tmp_path / HEADER).write_text(wrong)
    result = subprocess.run([compiler, "-std=c99", "-fsyntax-only",
                             str(tmp_path / "feature_scans.c")], capture_output=True, text=True)
    assert result.returncode != 0 and "conflicting types" in result.stderr


def test_the_ctypes_signatures_are_the_declared_ones():
    for spec in KERNELS.values():
        wrapper = load_kernel(spec)
        for fn in spec.wrapper.C_FUNCTIONS:
            bound = getattr(wrapper.c, fn.name)
            assert bound.argtypes == fn.argtypes() and len(bound.argtypes) == len(fn.params)
    top_k = CFunction("int", "featmon_top_k", ("const double *values", "int64_t n", "int64_t k",
                                               "int64_t *out"))
    assert top_k.argtypes() == [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                ctypes.c_void_p]
    with pytest.raises(ValueError, match="not a C parameter"):
        CFunction("void", "f", ("int64_t",)).argtypes()
