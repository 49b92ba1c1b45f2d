"""A forward loop in one thread while others configure, read, snapshot, clear
the history and subscribe/unsubscribe. The statistics equal the serial run's; nothing raises;
everything finishes in bounded time."""

import threading
import time

import torch

from featmon_widget import FeatureMonitor


def test_forward_loop_with_concurrent_operations_matches_serial():
    gen = torch.Generator().manual_seed(0)
    batches = [torch.relu(torch.randn(64, 32, generator=gen)) for _ in range(150)]
    monitor = FeatureMonitor(32, throttle_ms=0, compile=False)
    stop = threading.Event()
    failures: list[BaseException] = []
    calls = {"n": 0}
    sizes = iter(range(10**9))

    operations = [
        lambda: monitor.configure(history_size=10 + next(sizes) % 90, selected=[1, 2]),
        lambda: monitor.get_statistics(features=[0, 5, 31]),
        lambda: monitor.get_top_features(k=5, metric="std"),
        lambda: monitor.snapshot(table_rows=10),
        monitor.clear_history,
        lambda: monitor.subscribe(lambda snapshot: None).cancel(),
        lambda: monitor.get_history(limit=20),
    ]

    def hammer(operation):
        while not stop.is_set():
            try:
                operation()
                calls["n"] += 1
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                failures.append(exc)
                return
            time.sleep(0.001)  # busy, not a spin: the lock is not fair to the forward loop

    threads = [threading.Thread(target=hammer, args=(op,), daemon=True) for op in operations]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for acts in batches:
        monitor.on_activation(acts)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert time.monotonic() - start < 60
    assert not failures, failures[:3]
    assert calls["n"] > len(operations)  # the others really ran alongside

    serial = FeatureMonitor(32, compile=False)
    for acts in batches:
        serial.on_activation(acts)
    got, want = monitor.get_statistics().features, serial.get_statistics().features
    for a, b in zip(got, want, strict=True):
        assert (a.count, a.active_count, a.min, a.max) == (b.count, b.active_count, b.min, b.max)
        assert abs(a.mean - b.mean) <= 1e-12 * max(1.0, abs(b.mean))
        assert abs(a.std - b.std) <= 1e-12 * max(1.0, abs(b.std))
    assert monitor.state.total_tokens == serial.state.total_tokens == 150 * 64
    monitor.close()
