"""Random payloads through the widget's command handler. Every payload gets
exactly one well-formed, bounded reply; nothing escapes as an unexpected failure; a rejected
command changes nothing (configuration, table options, statistics, history)."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featmon_widget import FeatureMonitor
from featmon_widget.widget.commands import COMMANDS, FORM_SETTINGS, CommandHandler

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-(10**400), 10**400)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=15,
)
COMMAND = st.fixed_dictionaries(
    {"type": st.sampled_from(COMMANDS) | st.text(max_size=20)},
    optional={
        "id": JSON,
        "changes": st.dictionaries(st.sampled_from((*FORM_SETTINGS, "enabled", "bogus")), JSON,
                                   max_size=3) | JSON,
        "enabled": JSON, "metric": st.sampled_from(["mean", "std", "max"]) | JSON,
        "features": st.lists(st.integers(-3, 20), max_size=10) | JSON,
        "rows": JSON, "text": JSON,
    },
)
PAYLOAD = COMMAND | JSON


@pytest.fixture(scope="module")
def handler():
    monitor = FeatureMonitor(16, compile=False)
    monitor.on_activation(torch.relu(torch.randn(3, 5, 16)))
    subscription = monitor.subscribe(lambda snapshot: None)
    yield CommandHandler(monitor, subscription)
    monitor.close()


def _observable(handler):
    monitor = handler.monitor
    stats = monitor.get_statistics().features
    return (monitor.config, handler.subscription.options(), monitor.state.history_count,
            [(s.count, s.active_count) for s in stats])


def _check(handler, payload):
    before = _observable(handler)
    reply = handler.reply(payload)
    assert set(reply) == {"type", "id", "ok", "message", "error"} and reply["type"] == "reply"
    assert isinstance(reply["ok"], bool) and len(repr(reply)) < 2_000
    if not reply["ok"]:
        assert not reply["error"].startswith("the kernel failed"), reply["error"]
        assert _observable(handler) == before, payload


@settings(max_examples=1_000, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payload=PAYLOAD)
def test_random_commands_get_one_bounded_reply_and_rejections_change_nothing(handler, payload):
    _check(handler, payload)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payload=PAYLOAD)
def test_ten_thousand_random_commands(handler, payload):
    _check(handler, payload)
