"""A snapshot subscription: a raising callback is counted, never passed on; option updates are
checked before they apply and ask for a delivery; cancel hands the subscription back."""

import pytest

from featmon_widget.live.subscriptions import ERROR_CHARS, Subscription, short_error
from featmon_widget.snapshot.options import snapshot_options


def _subscription(callback=lambda snapshot: None):
    log = {"pokes": 0, "cancelled": []}

    def poke():
        log["pokes"] += 1

    sub = Subscription(callback, snapshot_options(10, "max", 5, "comma"),
                       cancel=log["cancelled"].append, poke=poke)
    return sub, log


def test_deliver_hands_the_snapshot_over_and_reports_success():
    got = []
    sub, _ = _subscription(got.append)
    assert sub.deliver("snapshot") is True
    assert got == ["snapshot"] and sub.errors == 0 and sub.last_error is None


def test_a_raising_callback_is_counted_and_its_error_kept_short():
    def explode(snapshot):
        raise ValueError("x" * 5000)

    sub, _ = _subscription(explode)
    assert sub.deliver("one") is False
    assert sub.deliver("two") is False
    assert sub.errors == 2
    assert sub.last_error.startswith("ValueError: xxx") and len(sub.last_error) == ERROR_CHARS


def test_short_error_names_the_type_and_keeps_short_messages_whole():
    assert short_error(KeyError("k")) == "KeyError: 'k'"
    assert len(short_error(RuntimeError("y" * 1000))) == ERROR_CHARS


def test_options_are_read_as_given():
    sub, _ = _subscription()
    assert (sub.table_rows, sub.metric, sub.records, sub.search) == (10, "max", 5, "comma")
    assert sub.options() == snapshot_options(10, "max", 5, "comma")
    assert repr(sub) == f"Subscription({sub.options()})"


def test_update_changes_only_what_is_given_and_asks_for_a_delivery():
    sub, log = _subscription()
    sub.update(metric="std", records=0)
    assert sub.options() == snapshot_options(10, "std", 0, "comma")
    assert log["pokes"] == 1
    sub.update(search="  semicolon ")
    assert sub.search == "semicolon"  # checked like every option: stripped
    assert log["pokes"] == 2


@pytest.mark.parametrize(("changes", "error", "needle"), [
    ({"metric": "nope"}, ValueError, "nope"),
    ({"table_rows": 0}, ValueError, "table_rows"),
    ({"records": 1.5}, TypeError, "records"),
    ({"search": 3}, TypeError, "search"),
    ({"colour": "red"}, TypeError, "unknown snapshot option"),
])
def test_a_bad_update_changes_nothing_and_delivers_nothing(changes, error, needle):
    sub, log = _subscription()
    before = sub.options()
    with pytest.raises(error, match=needle):
        sub.update(**changes)
    assert sub.options() == before and log["pokes"] == 0


def test_cancel_hands_the_subscription_to_its_owner():
    sub, log = _subscription()
    sub.cancel()
    assert log["cancelled"] == [sub]
