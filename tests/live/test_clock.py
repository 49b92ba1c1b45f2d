"""The delivery thread's time source: the real clock by default, replaceable for tests, and
the manual clock the live tests drive time with."""

import threading

import pytest
from virtual_time import ManualClock

from featmon_widget.live import clock
from featmon_widget.live.throttle import Throttle


def test_the_default_clock_is_the_real_one():
    assert clock.default_clock() is clock.DEFAULT is clock.SYSTEM
    assert isinstance(clock.SYSTEM, clock.SystemClock)


def test_the_real_clock_never_goes_back_and_its_wait_ends_on_a_notify():
    a = clock.SYSTEM.monotonic()
    assert clock.SYSTEM.monotonic() >= a
    cond = threading.Condition()
    ready, woke = threading.Event(), threading.Event()

    def waiter():
        with cond:
            ready.set()
            clock.SYSTEM.wait(cond, None)
        woke.set()

    threading.Thread(target=waiter, daemon=True).start()
    assert ready.wait(10)
    with cond:  # acquired only once the waiter is inside its wait
        cond.notify_all()
    assert woke.wait(10)
    with cond:
        clock.SYSTEM.wait(cond, 0)  # a zero timeout returns at once


def test_a_throttle_made_without_a_clock_takes_the_default_when_it_is_made(manual_clock):
    calls: list[float] = []
    throttle = Throttle(lambda: calls.append(manual_clock.monotonic()), 1.0)
    with manual_clock.settled():
        throttle.poke()
    with manual_clock.settled():
        throttle.poke()
    manual_clock.advance(0.5)
    assert calls == [0.0]
    manual_clock.advance(0.5)
    assert calls == [0.0, 1.0]
    throttle.close()


def test_the_manual_clock_refuses_what_a_real_wait_cannot_take():
    manual = ManualClock()
    cond = threading.Condition()
    with cond, pytest.raises(OverflowError):
        manual.wait(cond, threading.TIMEOUT_MAX * 2)
    with pytest.raises(ValueError, match="never goes back"):
        manual.advance(-1.0)
    manual.advance(2.5)
    assert manual.monotonic() == 2.5
