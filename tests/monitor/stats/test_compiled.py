"""`CompileOrEager` (`stats/compiled.py`): compiled once per function and variant, and eager
for good, warned about once, after anything in compiling or running fails."""

import warnings

import pytest
import torch

from featmon_widget.monitor.stats.compiled import CompileOrEager


def double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def eager_double(x: torch.Tensor) -> torch.Tensor:
    return x + x


@pytest.fixture
def compiles(monkeypatch):
    """Calls of torch.compile, recorded; the 'compiled' function is the plain one."""
    calls = []

    def fake_compile(fn, dynamic=None, options=None):
        calls.append((fn.__name__, dynamic, options))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    return calls


def test_each_function_and_variant_is_compiled_once(compiles):
    runner = CompileOrEager(True, "test")
    assert runner.mode == "eager"  # nothing compiled ran yet
    x = torch.ones(3)
    for _ in range(3):
        assert torch.equal(runner.run(double, eager_double, x), x * 2)
    runner.run(double, eager_double, x, variant="wide", options={"cpp.simdlen": 256})
    assert compiles == [("double", True, None), ("double", True, {"cpp.simdlen": 256})]
    assert runner.mode == "compiled" and runner.active


def test_compile_false_runs_eagerly_and_never_compiles(compiles):
    runner = CompileOrEager(False, "test")
    calls = []
    assert runner.run(double, lambda x: calls.append(x) or x + x, torch.ones(2)).tolist() == \
        [2.0, 2.0]
    assert compiles == [] and len(calls) == 1
    assert runner.mode == "eager" and not runner.active


def test_a_function_that_fails_to_compile_falls_back_to_eager_for_good():
    """A real torch.compile refusal (an option inductor does not have): the eager function
    answers, the warning names the work, and nothing is compiled again."""
    runner = CompileOrEager(True, "the test's kernels")
    x = torch.arange(4.0)
    with pytest.warns(RuntimeWarning, match="the test's kernels unavailable"):
        out = runner.run(double, eager_double, x, options={"no_such_inductor_option": 1})
    assert torch.equal(out, x + x)
    assert runner.mode == "eager" and not runner.active
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: no second warning
        assert torch.equal(runner.run(double, eager_double, x), x + x)


def test_a_compiled_function_that_fails_when_run_falls_back_too(monkeypatch):
    compiled_calls = []

    def broken(*args):
        compiled_calls.append(args)
        raise RuntimeError("inductor's C++ build failed")

    monkeypatch.setattr(torch, "compile", lambda fn, dynamic=None, options=None: broken)
    runner = CompileOrEager(True, "compiled statistics")
    with pytest.warns(RuntimeWarning, match="C\\+\\+ build failed"):
        assert runner.run(double, eager_double, torch.ones(1)).tolist() == [2.0]
    runner.run(double, eager_double, torch.ones(1))
    assert len(compiled_calls) == 1  # never tried again
    assert runner.mode == "eager"
