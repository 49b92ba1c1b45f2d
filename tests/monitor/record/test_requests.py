"""Request ids: checked and bounded, automatic `auto-N` ids per forward outside a `request`
block, named ids interned to codes (forgetting only names no kept example holds), and the
names of a ring's latest writes."""

import threading

import pytest

from featmon_widget.monitor.record import requests
from featmon_widget.monitor.record.requests import (
    MAX_REQUEST_ID_CHARS,
    RequestContext,
    RequestNames,
    WriteNames,
    automatic_number,
    check_names_meta,
    check_request_id,
)


def test_automatic_ids_are_recognised_by_their_exact_form():
    assert automatic_number("auto-0") == 0 and automatic_number("auto-42") == 42
    for named in ("auto-", "auto-01", "auto-1x", "xauto-1", "Auto-1", "auto--1"):
        assert automatic_number(named) is None


@pytest.mark.parametrize(("request_id", "error", "needle"), [
    (7, TypeError, "must be a string"),
    ("", ValueError, "1..200"),
    ("x" * (MAX_REQUEST_ID_CHARS + 1), ValueError, "got 201"),
    ("\ud83d", ValueError, "lone surrogate"),
])
def test_bad_request_ids_are_refused_naming_them(request_id, error, needle):
    with pytest.raises(error, match=needle):
        check_request_id(request_id)


def test_a_long_id_is_cut_short_in_the_message():
    with pytest.raises(ValueError) as caught:
        check_request_id("y" * 10_000)
    assert len(str(caught.value)) < 200


def test_codes_are_stable_and_automatic_ids_need_no_interning():
    names = RequestNames()
    a, b = names.code("alpha"), names.code("beta")
    assert (a, b) == (0, 1) and names.code("alpha") == a
    assert names.code("auto-7") == -8 and names.name(-8) == "auto-7"
    assert (names.name(a), names.name(b)) == ("alpha", "beta")
    assert len(names) == 2  # automatic ids are not stored
    assert names.name(99) == "request #99"


def test_past_the_cap_only_the_names_still_held_are_kept(monkeypatch):
    monkeypatch.setattr(requests, "MAX_REQUEST_NAMES", 3)
    names = RequestNames()
    codes = [names.code(n) for n in ("a", "b", "c")]
    names.code("d", held=lambda: {codes[1]})  # only "b" is still held by an example
    assert names.name(codes[1]) == "b"
    assert names.name(codes[0]) == f"request #{codes[0]}"
    assert names.code("b") == codes[1]  # a held name keeps its code
    assert names.code("a") not in codes  # a forgotten one gets a fresh code


def test_request_names_round_trip_through_their_state():
    names = RequestNames()
    for n in ("x", "y"):
        names.code(n)
    again = RequestNames()
    meta = names.state_meta()
    check_names_meta(meta, "next")
    again.load_state_meta(meta)
    assert (again.code("x"), again.code("y"), again.code("z")) == (0, 1, 2)


@pytest.mark.parametrize("meta", [
    "names", {"names": "x", "next": 0}, {"names": [], "next": "0"},
    {"names": [[0]], "next": 1}, {"names": [["0", "a"]], "next": 1},
    {"names": [[0, 5]], "next": 1},
])
def test_malformed_name_state_is_refused(meta):
    with pytest.raises(ValueError, match="request name"):
        check_names_meta(meta, "next")


def test_write_names_keep_the_latest_writes_only():
    names = WriteNames(keep=2)
    codes = [names.register(r) for r in ("a", "b", "c")]
    assert codes == [0, 1, 2]
    assert names.snapshot() == {1: "b", 2: "c"} and len(names) == 2
    wider = names.copy(keep=5)
    assert wider.register("d") == 3 and wider.snapshot() == {1: "b", 2: "c", 3: "d"}
    names.clear()
    assert names.snapshot() == {} and names.register("e") == 3  # codes keep counting
    restored = WriteNames(2)
    meta = wider.state_meta()
    check_names_meta(meta, "next_code")
    restored.load_state_meta(meta)
    assert restored.snapshot() == wider.snapshot() and restored.register("f") == 4


def test_the_request_block_tags_this_context_and_automatic_ids_count_up():
    context = RequestContext("test_requests")
    assert [context.current() for _ in range(2)] == ["auto-0", "auto-1"]
    with context.request("chat-1") as rid:
        assert rid == "chat-1" and context.current() == "chat-1"
        with context.request("inner"):
            assert context.current() == "inner"
        assert context.current() == "chat-1"
    assert context.current() == "auto-2"
    assert context.next_automatic() == 3 and context.current() == "auto-3"
    context.continue_from(10)
    assert context.current() == "auto-10"
    with pytest.raises(TypeError):
        context.request(None)  # checked when asked for, not at the `with`


def test_a_request_block_is_local_to_its_thread():
    context = RequestContext("test_requests_threads")
    seen = []
    with context.request("main"):
        worker = threading.Thread(target=lambda: seen.append(context.current()))
        worker.start()
        worker.join()
    assert seen and seen[0].startswith("auto-")
