"""The `probe` command: one reply with bounded `data` (tokens, the shaded feature's values,
top features with labels) equal to `monitor.probe`, nothing recorded; clear error replies."""

import json

import pytest
from tiny_model import attach_tiny, tiny_sae

from featmon_widget import FeatureMonitor
from featmon_widget.types import ProbeResponse, ProbeText
from featmon_widget.widget import MonitorWidget
from featmon_widget.widget.probe_reply import (
    PROBE_REPLY_BYTES,
    PROBE_REPLY_TOKENS,
    PROBE_TEXT_CHARS,
    probe_data,
)

D_SAE = 12


@pytest.fixture
def widget():
    sae = tiny_sae(D_SAE)
    monitor = attach_tiny(FeatureMonitor.for_sae(sae, compile=False, selected=[2]), sae)
    monitor.set_labels({3: "three"})
    w = MonitorWidget(monitor)
    w.sent = []
    w.send = lambda content, buffers=None: w.sent.append(content)
    yield w
    w.close()
    monitor.close()


def test_probe_reply_carries_the_probed_tokens(widget):
    monitor = widget.monitor
    reply = widget.answer({"id": 3, "type": "probe", "text": "hello", "feature": 2})
    assert widget.sent[-1] == reply and reply["ok"] and reply["id"] == 3
    assert reply["message"] == "probed 5 tokens"
    data = reply["data"]
    want = monitor.probe("hello", features=[2]).texts[0]
    assert data["feature"] == 2 and not data["truncated"]
    assert data["tokens"] == want.tokens
    assert data["values"] == pytest.approx(want.activations[2], rel=1e-3, abs=1e-6)
    for got, ref in zip(data["top"], want.top_features, strict=True):
        assert [f for f, _ in got] == [f for f, _ in ref]
    named = {f for top in data["top"] for f, _ in top}
    assert data["labels"] == ({"3": "three"} if 3 in named else {})
    assert monitor.state.total_tokens == 0  # the test box records nothing
    json.dumps(reply, allow_nan=False)


@pytest.mark.parametrize(("content", "needle"), [
    ({"type": "probe"}, "'text'"),
    ({"type": "probe", "text": "x" * (PROBE_TEXT_CHARS + 1)}, "at most"),
    ({"type": "probe", "text": "hi", "feature": "2"}, "feature index"),
    ({"type": "probe", "text": "hi", "feature": 99}, "feature"),
    ({"type": "probe", "text": "   "}, "non-empty"),
])
def test_bad_probe_commands_get_one_error_reply(widget, content, needle):
    reply = widget.answer({"id": 4, **content})
    assert reply["ok"] is False and needle in reply["error"] and "data" not in reply
    assert not reply["error"].startswith("the kernel failed")


def test_probe_without_a_model_is_a_clear_error():
    monitor = FeatureMonitor(D_SAE, compile=False)
    w = MonitorWidget(monitor)
    w.send = lambda content, buffers=None: None
    try:
        reply = w.answer({"id": 1, "type": "probe", "text": "hi"})
        assert reply["ok"] is False and "attached model" in reply["error"]
    finally:
        w.close()
        monitor.close()


def test_probe_data_is_bounded():
    n = 300
    text = ProbeText(text="x", tokens=["\u2603" * 40] * n, token_ids=list(range(n)),
                     activations={0: [1.0] * n},
                     top_features=[[(f, 1.0) for f in range(5 * i, 5 * i + 5)]
                                   for i in range(n)])
    labels = {f: "\u2603" * 100 for f in range(5 * n)}
    response = ProbeResponse(features=[0], texts=[text], labels=labels, hook_point="h",
                             recorded=False)
    data = probe_data(response, 0)
    assert data["truncated"] and len(data["tokens"]) <= PROBE_REPLY_TOKENS
    assert len(data["tokens"]) == len(data["values"]) == len(data["top"])
    assert len(json.dumps(data, ensure_ascii=False).encode()) <= PROBE_REPLY_BYTES
    assert data["labels"]  # some labels still fit
    assert probe_data(response, None)["values"] == [None] * len(probe_data(response,
                                                                          None)["tokens"])
