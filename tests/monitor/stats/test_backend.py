"""The monitor's `Backend` (`stats/backend.py`) decides for every kernel whether C or torch runs.

For each C function: with `native=False` no C call happens anywhere (a counter on every loaded
wrapper's functions says so) and the torch paths give what the C kernels give: counts, min/max,
rankings by them, histograms, history, examples and health exactly; means, deviations and
mean-active values (float sums taken in another order) within the usual tolerance. With
`native=True` the same scenario reaches every C function, so the comparison covers them all.
"""

import dataclasses
import math
from collections import Counter

import pytest
import torch

from featmon_widget import FeatureMonitor, SparseAutoencoder
from featmon_widget.monitor.oversight.drift import Reference, drift_response
from featmon_widget.monitor.stats import backend as backend_module
from featmon_widget.monitor.stats.backend import KERNELS, Backend, load_kernel
from featmon_widget.monitor.stats.fused import FusedEncoder
from featmon_widget.monitor.stats.kernels import StatisticsKernels
from featmon_widget.types import METRICS

F = 4096  # wide enough that a 513-sequence forward is two example chunks (the row-max kernel)
C_FUNCTIONS = {fn.name for spec in KERNELS.values() for fn in spec.wrapper.C_FUNCTIONS}
EXACT_METRICS = ("count", "active_count", "active_ratio", "max", "min")


class CountedFunctions:
    """A wrapper's C functions, each call counted."""

    def __init__(self, real, calls: Counter) -> None:
        self._real, self._calls = real, calls

    def __getattr__(self, name):
        fn = getattr(self._real, name)

        def counted(*args):
            self._calls[name] += 1
            return fn(*args)
        return counted


@pytest.fixture
def c_calls(monkeypatch) -> Counter:
    """Calls into any C function of any kernel, by function name, from here on."""
    calls: Counter = Counter()
    for spec in KERNELS.values():
        wrapper = load_kernel(spec)
        assert wrapper is not None, f"{spec.source} must build here"
        monkeypatch.setattr(wrapper, "c", CountedFunctions(wrapper.c, calls))
    return calls


def _dyadic(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """Halves in -1..2.5 with some NaN/Inf: few distinct values (many ties to break the same
    way), and sums that are exact in float64 whatever the order."""
    x = torch.randint(-2, 6, shape, generator=gen) * 0.5
    x.view(-1)[::997] = float("nan")
    x.view(-1)[5::1009] = float("inf")
    return x


def _feed_exact(monitor: FeatureMonitor) -> None:
    gen = torch.Generator().manual_seed(0)
    mask = torch.ones(3, 5)
    mask[1, :2] = 0
    ids = torch.randint(0, 100, (3, 5), generator=gen)
    monitor.on_activation(_dyadic(gen, 3, 5, F), request_id="a", mask=mask, token_ids=ids)
    monitor.on_activation(_dyadic(gen, 513, 1, F), request_id="big")  # row maxima of its own
    indices = torch.randint(0, F, (2, 6, 12), generator=gen)
    indices[0, 0, 1] = indices[0, 0, 0]  # a repeat within a token: dropped
    indices[1, 2, 3] = F + 5  # out of range: dropped
    values = torch.randint(1, 8, (2, 6, 12), generator=gen) * 0.25
    monitor.on_sparse_activation(indices, values, request_id="b",
                                 token_ids=ids[:2, :1].expand(2, 6))
    monitor.on_sparse_activation(indices[:, :3], -values[:, :3], request_id="b")


def _sae(gen: torch.Generator, architecture: str, k: int | None = None) -> SparseAutoencoder:
    w = torch.randn(16, F, generator=gen) / 4
    return SparseAutoencoder.from_tensors(w, torch.full((F,), -0.3), w.T.contiguous(),
                                          torch.zeros(16), architecture=architecture, k=k)


def _feed_encoded(monitor: FeatureMonitor) -> None:
    gen = torch.Generator().manual_seed(1)
    relu, topk = _sae(gen, "standard"), _sae(gen, "topk", k=20)
    for tokens in (7, 3):
        x = torch.randn(2, tokens, 16, generator=gen)
        mask = torch.ones(2, tokens)
        mask[0, 0] = 0
        monitor.encode_and_record(relu, x, "enc", mask)
        monitor.encode_and_record(topk, x, "topk")


def _record(record: dict) -> dict:
    """A snapshot record without its time, and of its top features only the values: among equal
    values the C top-k keeps the lower index, torch.topk any (as on a GPU)."""
    out = {k: v for k, v in record.items() if k != "timestamp"}
    out["top"] = [value for _, value in out["top"]]
    return out


def _observed(monitor: FeatureMonitor) -> dict:
    """Everything a user can read of the monitor that the kernels computed; "floats" are the
    values compared within a tolerance."""
    monitor.set_labels({f: f"label {f % 3}" for f in range(0, F, 2)})
    snap = monitor.snapshot(table_rows=12, metric="active_ratio", search="label 1")
    stats = monitor.get_statistics().features
    for metric in METRICS:  # every ranking runs; those by float sums may break near-ties apart
        monitor.get_top_features(30, metric)
    out = {
        "counts": [(s.count, s.active_count, s.nan_count, s.max, s.min) for s in stats],
        "floats": [(s.mean, s.std, s.mean_active) for s in stats]
        + [tuple(torch.frombuffer(bytearray(column), dtype=torch.float64).tolist())
           for column in snap.table_columns.values()],
        "ranked": {m: [f.feature_idx for f in monitor.get_top_features(30, m).features]
                   for m in EXACT_METRICS},
        "snapshot": (snap.table_features, snap.frequency_counts, snap.never_fired,
                     snap.never_seen, [_record(r) for r in snap.records]),
        "history": [dataclasses.replace(r, timestamp=0.0, top_k=[v for _, v in r.top_k])
                    for r in monitor.get_history(limit=200).records],
        "examples": [monitor.get_examples(f).examples for f in range(0, F, 37)],
        # Dense forwards' samples (a TopK forward's window activations: see test_samples).
        "samples": [[e for e in monitor.get_examples(f, kind="sample").examples
                     if e.request_id != "b"] for f in range(0, F, 37)],
        "health": dataclasses.asdict(monitor.get_health()),
        "state": (monitor.state.total_tokens, monitor.state.dropped_indices),
    }
    return out


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


@pytest.mark.parametrize("feed", ["exact", "encoded"])
def test_native_off_runs_no_c_kernel_and_gives_the_same_results(c_calls, feed):
    exact = feed == "exact"
    run = _feed_exact if exact else _feed_encoded
    # compile=False: the torch side is eager (the compiled graphs are test_kernels' and
    # test_fused's); the native side needs no compiling.
    native = FeatureMonitor(F, compile=False, native=True, examples_per_feature=3,
                            context_window=2, selected=[0, 5])
    run(native)
    on = _observed(native)
    assert set(c_calls) >= (C_FUNCTIONS if exact else {
        "featmon_dense_moments", "featmon_sparse_accumulate",
        "featmon_merge_table", "featmon_drop_repeats", "featmon_examples_merge",
        "featmon_examples_merge_list", "featmon_firing_summary", "featmon_top_k",
        "featmon_top_k_metric"}), set(c_calls)
    c_calls.clear()

    torch_only = FeatureMonitor(F, compile=False, native=False, examples_per_feature=3,
                                context_window=2, selected=[0, 5])
    run(torch_only)
    off = _observed(torch_only)
    assert c_calls == Counter()  # not one C call
    assert torch_only._recording.stats.compiled.mode == "eager"
    assert torch_only._recording.stats.pending_table is None

    floats_on, floats_off = on.pop("floats"), off.pop("floats")
    assert all(_close(a, b) for row_a, row_b in zip(floats_on, floats_off, strict=True)
               for a, b in zip(row_a, row_b, strict=True))
    for key in on:
        assert on[key] == off[key], key


def test_every_c_function_is_declared_once_and_reached(c_calls):
    """A test above must reach each declared function: no kernel is left unchecked."""
    monitor = FeatureMonitor(F, compile=False, native=True, examples_per_feature=3,
                             selected=[1, 2])  # co-firing: its kernel too
    _feed_exact(monitor)
    _observed(monitor)
    assert set(c_calls) == C_FUNCTIONS
    assert len(C_FUNCTIONS) == sum(len(s.wrapper.C_FUNCTIONS) for s in KERNELS.values())


def test_the_in_place_activation_and_its_torch_path(c_calls):
    """Our ReLU SAE on the CPU: the statistics kernel activates the pre-activations in place;
    with native off, the eager encode and torch statistics give the same features and
    moments."""
    gen = torch.Generator().manual_seed(2)
    sae = _sae(gen, "standard")
    x = torch.randn(9, 16, generator=gen)
    valid = torch.rand(9, generator=gen) > 0.3
    mean, count = torch.zeros(F, dtype=torch.float64), torch.zeros(F, dtype=torch.int64)
    fused = FusedEncoder(StatisticsKernels(backend=Backend(native=True, compile=True)))
    on = fused(sae, x, valid, mean, count, 0.05, tokens=3)
    assert c_calls == Counter({"featmon_dense_moments": 1})
    assert fused.runner.mode == "eager"  # nothing compiled: the kernel did the activation
    c_calls.clear()
    eager = FusedEncoder(StatisticsKernels(backend=Backend(native=False, compile=False)))
    off = eager(sae, x, valid, mean, count, 0.05, tokens=3)
    assert c_calls == Counter() and off.maxima is None  # the examples find them themselves
    assert torch.equal(on.features, off.features) and torch.equal(on.shift, off.shift)
    for a, b in zip(on.moments, off.moments, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_drift_ranks_the_same_on_both_paths(c_calls):
    gen = torch.Generator().manual_seed(3)
    active = torch.randint(0, 50, (F,), generator=gen).double()
    ref = Reference(torch.full((F,), 0.01, dtype=torch.float64), None, None, "test")
    for direction in ("hot", "cold"):
        native = drift_response(active, 1000.0, ref, 10, direction, Backend(native=True))
        assert c_calls["featmon_top_k"] == 1
        c_calls.clear()
        assert drift_response(active, 1000.0, ref, 10, direction, Backend(native=False)) == \
            native == drift_response(active, 1000.0, ref, 10, direction)
        assert c_calls == Counter()


def test_featmon_native_0_turns_every_kernel_off_and_is_read_once(monkeypatch, c_calls):
    monkeypatch.setenv("FEATMON_NATIVE", "0")
    monitor = FeatureMonitor(F, compile=False, examples_per_feature=3)
    assert monitor._recording.backend.native is False
    monkeypatch.setenv("FEATMON_NATIVE", "1")  # read when the backend was made, not per call
    _feed_exact(monitor)
    _observed(monitor)
    assert c_calls == Counter()
    monkeypatch.delenv("FEATMON_NATIVE")
    assert Backend().native is True and Backend().compile is False  # conftest: FEATMON_COMPILE=0


def test_no_environment_is_read_after_the_backend_is_made(monkeypatch):
    monitor = FeatureMonitor(F, compile=False, native=None, examples_per_feature=3)

    class NoEnvironment:
        @property
        def environ(self):
            raise AssertionError("the environment was read on the hot path")

    monkeypatch.setattr(backend_module, "os", NoEnvironment())
    _feed_exact(monitor)
    _observed(monitor)


def test_a_native_false_backend_never_loads_a_library(monkeypatch):
    monkeypatch.setattr(backend_module, "load_kernel", lambda spec: pytest.fail("loaded"))
    off = Backend(native=False, compile=False)
    assert off.available() == {name: False for name in KERNELS}
    assert off.dense_moments(torch.zeros(2, 3)) is None
    assert off.sparse(torch.device("cpu")) is None


def test_each_decision_follows_device_dtype_and_layout():
    b = Backend(native=True)
    cpu, meta = torch.device("cpu"), torch.device("meta")
    f32 = torch.zeros(4, 8)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert b.dense_moments(f32.to(dtype)) is b.kernel("dense")
    assert b.dense_moments(f32.double()) is None
    assert b.dense_moments(f32.to(meta)) is None
    assert b.dense_activation(f32) is not None
    assert b.dense_activation(f32.t()) is None and b.dense_activation(f32.half()) is None
    assert b.statistics_row_maxima(cpu) and not b.statistics_row_maxima(meta)
    assert b.row_topk(f32, 8) is not None
    assert b.row_topk(f32.bfloat16(), 2) is not None
    assert b.row_topk(f32, 9) is None and b.row_topk(f32.half(), 2) is None
    assert b.sparse(cpu) is not None and b.sparse(meta) is None
    assert b.example_merge(cpu) is not None and b.example_merge(meta) is None
    rows = torch.zeros(2, 3, 8)
    assert b.example_row_max(rows) is not None and b.example_row_max(rows.bfloat16()) is not None
    assert b.example_row_max(rows.half()) is None
    values = torch.zeros(100, dtype=torch.float64)
    assert b.top_k(values, 24) is not None
    assert b.top_k(values, 25) is None and b.top_k(values, 0) is None
    assert b.top_k(values.float(), 2) is None and b.top_k(values[::2], 2) is None
    stats = FeatureMonitor(100, compile=False)._recording.stats
    assert b.top_k_metric(stats.totals, "mean", 3) is not None
    assert b.top_k_metric(stats.totals, "median", 3) is None
    counts = torch.zeros(10, dtype=torch.int64)
    assert b.firing_summary(counts, counts) is not None
    assert b.firing_summary(counts[::2], counts[::2]) is None
    assert b.firing_summary(counts.to(meta), counts.to(meta)) is None


def test_the_monitor_owns_one_backend_every_part_uses():
    monitor = FeatureMonitor(8, compile=False, native=False)
    rec = monitor._recording
    backend = rec.backend
    assert backend.native is False and backend.compile is False
    assert rec.stats.compiled.backend is backend and rec.examples.backend is backend
    assert monitor._ingest.repeats.backend is backend
    assert monitor._ingest.fused.statistics.backend is backend
    assert rec.examples.runner is backend.runner is rec.stats.compiled.runner
