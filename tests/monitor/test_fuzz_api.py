"""Random calls to the Python API. Each either works or raises a ValueError /
TypeError that leaves the monitor exactly as it was; nothing else escapes."""

import dataclasses

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featmon_widget import FeatureMonitor
from featmon_widget.monitor.config import MonitorConfig

SETTINGS = [f.name for f in dataclasses.fields(MonitorConfig)]
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
    | st.complex_numbers(allow_nan=True),
    lambda children: st.lists(children, max_size=4), max_leaves=10)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.bool,
          torch.complex64]


@st.composite
def tensors(draw, width):
    dims = draw(st.lists(st.integers(0, 3), max_size=2))
    last = draw(st.sampled_from([width, width, width - 1, 0]))
    dtype = draw(st.sampled_from(DTYPES))
    shape = (*dims, last)
    if dtype.is_complex:
        return torch.ones(shape, dtype=dtype)
    return (torch.rand(shape) * 4 - 1).to(dtype)


CALLS = st.one_of(
    st.tuples(st.just("configure"), st.dictionaries(st.sampled_from([*SETTINGS, "bogus"]),
                                                    JUNK | st.integers(-5, 300), max_size=3)),
    st.tuples(st.just("on_activation"), st.fixed_dictionaries(
        {"acts": tensors(8) | JUNK},
        optional={"request_id": JUNK | st.text(max_size=300),
                  "positions": JUNK | st.builds(torch.arange, st.integers(0, 6))})),
    st.tuples(st.just("on_sparse_activation"), st.fixed_dictionaries(
        {"indices": st.builds(lambda n, k: torch.randint(-2, 10, (n, k)), st.integers(0, 3),
                              st.integers(1, 3)) | JUNK,
         "values": tensors(2) | JUNK})),
    st.tuples(st.just("get_top_features"), st.fixed_dictionaries({"k": JUNK, "metric": JUNK})),
    st.tuples(st.just("get_history"), st.fixed_dictionaries({"limit": JUNK})),
    st.tuples(st.just("get_statistics"), st.fixed_dictionaries({"features": JUNK})),
)


@pytest.fixture(scope="module")
def monitor():
    monitor = FeatureMonitor(8, compile=False)
    monitor.on_activation(torch.rand(2, 3, 8))
    yield monitor
    monitor.close()


def _observable(monitor):
    state = monitor.state
    stats = [(s.count, s.nan_count, s.active_count) for s in monitor.get_statistics().features]
    return (monitor.config, state.total_tokens, state.forward_passes, state.history_count,
            state.dropped_indices, stats)


@settings(max_examples=2_000, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(call=CALLS)
def test_random_api_calls_work_or_refuse_cleanly(monitor, call):
    name, kwargs = call
    before = _observable(monitor)
    try:
        getattr(monitor, name)(**kwargs)
    except (ValueError, TypeError):
        assert _observable(monitor) == before, (name, kwargs)
