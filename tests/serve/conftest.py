"""A real uvicorn server on a free loopback port, and helpers to read it."""

import asyncio
import threading
import time

import pytest
import torch

from featmon_widget import FeatureMonitor

D_SAE = 64


def recorded_monitor(**config) -> FeatureMonitor:
    """A monitor with some known traffic: two named requests, one auto forward."""
    config = {"throttle_ms": 20, "history_size": 50, "top_k": 5, **config}
    monitor = FeatureMonitor(D_SAE, **config)
    gen = torch.Generator().manual_seed(0)
    with monitor.request("alpha"):
        monitor.on_activation(torch.relu(torch.randn(2, 6, D_SAE, generator=gen)),
                              token_ids=torch.arange(12).reshape(2, 6))
    with monitor.request("beta"):
        monitor.on_activation(torch.relu(torch.randn(1, 5, D_SAE, generator=gen)))
    monitor.on_activation(torch.relu(torch.randn(3, D_SAE, generator=gen)))
    return monitor


@pytest.fixture
def monitor():
    m = recorded_monitor()
    yield m
    m.close()


@pytest.fixture
def server(monitor):
    with monitor.serve(quiet=True) as s:
        yield s


def api_client(server, **kwargs):
    """An httpx client whose paths are relative to /api/monitoring ("" is the state)."""
    import httpx

    class Api(httpx.Client):
        def request(self, method, url, **kw):
            return super().request(method, "/api/monitoring" + url, **kw)

    kwargs.setdefault("headers", {"Authorization": f"Bearer {server.token}"})
    return Api(base_url=server.url, timeout=30, **kwargs)


@pytest.fixture
def http(server):
    with api_client(server) as c:
        yield c


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def fingerprint(monitor: FeatureMonitor):
    """Everything a rejected request must leave alone."""
    state = monitor.state.to_dict()
    for volatile in ("monitor_ms",):
        state.pop(volatile)
    return (state, monitor.get_statistics(), monitor.get_history(limit=1000))


def run_async(scenario) -> None:
    """`asyncio.run(scenario())` on a thread of its own, its exception raised here: the browser
    tests' session-wide Playwright (sync API) keeps an event loop running on the main thread,
    where `asyncio.run` refuses to start another."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(scenario())
        except BaseException as exc:  # handed to the test's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="test-event-loop")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
