"""A callback's own worker: a slow or blocking callback delays only itself, its queue is
bounded with the overflow counted, and `close()` (the gate) stops it."""

import threading

import torch

from featmon_widget import FeatureMonitor
from featmon_widget.live.gate import CallbackGate
from featmon_widget.live.worker import CallbackWorker


def test_a_blocking_watch_callback_starves_neither_snapshots_nor_other_watches():
    """One blocking watch callback used to stop every snapshot (0 in 2 s): they all ran on
    the delivery thread. Real clock; only that deliveries keep arriving is checked."""
    monitor = FeatureMonitor(8, compile=False, throttle_ms=0)
    release, blocked = threading.Event(), threading.Event()
    snapshots, hits = threading.Semaphore(0), threading.Semaphore(0)

    def blocking(hit):
        blocked.set()
        release.wait(60)

    monitor.watch(1, above=-1.0, callback=blocking)
    other = monitor.watch(2, above=-1.0, callback=lambda hit: hits.release())
    monitor.subscribe(lambda snapshot: snapshots.release())
    monitor.on_activation(torch.rand(2, 8))
    assert blocked.wait(30)
    for _ in range(3):  # every forward still brings a snapshot and the other watch's hits
        monitor.on_activation(torch.rand(2, 8))
        assert snapshots.acquire(timeout=30)
    for _ in range(8):
        assert hits.acquire(timeout=30)
    assert other.errors == 0
    release.set()
    monitor.close()


def test_the_queue_is_bounded_and_the_overflow_counted():
    entered, release = threading.Event(), threading.Event()
    got = []

    def slow(item):
        got.append(item)
        entered.set()
        release.wait(60)

    worker = CallbackWorker(slow, CallbackGate(), limit=3, warning="boom")
    worker.put([0])
    assert entered.wait(30)  # the worker is inside the callback with item 0
    worker.put(list(range(1, 11)))  # 3 fit, 7 do not
    assert worker.overflow == 7
    release.set()
    worker.finish()
    worker._thread.join(30)
    assert got == [0, 1, 2, 3] and worker.called == 4 and worker.errors == 0


def test_closing_the_gate_stops_an_idle_worker():
    gate = CallbackGate()
    got = []
    worker = CallbackWorker(got.append, gate, limit=10, warning="boom")
    worker.put([1])
    gate.close()
    worker._thread.join(30)
    assert not worker._thread.is_alive()
    worker.put([2])
    assert got in ([], [1])  # 1 may or may not have been handed over before the close
