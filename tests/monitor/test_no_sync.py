"""The hot path never reads a value back to the host.

Two independent proofs that work without a GPU: the monitor runs on the `meta` device, where
tensors have no values at all (any `.item()`, `.cpu()`, `nonzero` or data-dependent shape would
raise), and a dispatch guard fails on the operators that force a host sync on CUDA.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from featmon_widget import FeatureMonitor, SparseAutoencoder

# Operators that read device values on the host (or produce data-dependent shapes).
SYNCING_OPS = {
    "aten::_local_scalar_dense",  # .item(), int(t), float(t), bool(t), `if t:`
    "aten::nonzero",
    "aten::masked_select",
    "aten::bincount",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::_to_copy",  # checked below for a device change to the CPU
}


class SyncGuard(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if name in SYNCING_OPS:
            device = kwargs.get("device")
            if name != "aten::_to_copy" or (device is not None and str(device) == "cpu"):
                self.seen.append(name)
        return func(*args, **kwargs)


def _sae(d_in=8, d_sae=24, device="cpu"):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(d_in, d_sae, generator=gen)
    return SparseAutoencoder.from_tensors(w, torch.zeros(d_sae), w.T.contiguous(),
                                          torch.zeros(d_in), device=device)


def test_on_activation_runs_on_meta_tensors():
    m = FeatureMonitor(24, device="meta", features=[1, 2], selected=[3], compile=False,
                       health_every=1)
    m.watch([4, 5], above=0.5)
    acts = torch.empty(2, 7, 24, device="meta")
    mask = torch.empty(2, 9, dtype=torch.long, device="meta")
    with m.request("r"):
        m.on_activation(acts, mask=mask,
                        token_ids=torch.empty(2, 7, dtype=torch.long, device="meta"))
        m.on_activation(torch.empty(2, 1, 24, device="meta"))
    assert m._recording.stats.mean.device.type == "meta"


def test_encode_and_record_runs_on_meta_tensors():
    sae = _sae(device="meta")
    m = FeatureMonitor.for_sae(sae, compile=False, health_every=1)
    m.watch([4], above=0.5)
    m.encode_and_record(sae, torch.empty(3, 5, 8, device="meta"), "r",
                        torch.empty(3, 5, device="meta"),
                        torch.empty(1, 5, dtype=torch.long, device="meta"))
    assert m._recording.history.written.device.type == "meta"


@pytest.mark.parametrize("path", ["on_activation", "hooked forward"])
def test_hot_path_calls_no_syncing_operator(path):
    sae = _sae()
    # Health sampled on every forward and a watch on: neither may read back either.
    m = FeatureMonitor.for_sae(sae, features=[0, 1], selected=[2], compile=False,
                               health_every=1)
    m.watch([3, 4], above=0.1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    m.attach(model, "0", sae)
    x = torch.randn(2, 6, 8)
    acts = sae.encode(x)
    guard = SyncGuard()
    with guard, torch.no_grad():
        for _ in range(3):
            if path == "on_activation":
                m.on_activation(acts, mask=torch.ones(2, 6), token_ids=torch.ones(2, 6).long())
            else:
                model(x)
    assert guard.seen == []
    assert m.state.total_tokens == 36  # and it really recorded


def test_guard_catches_a_host_read():
    guard = SyncGuard()
    with guard:
        torch.ones(3).sum().item()
    assert guard.seen == ["aten::_local_scalar_dense"]


def test_sparse_path_runs_on_meta_tensors():
    m = FeatureMonitor(24, device="meta", features=[1], selected=[2], top_k=12, compile=False,
                       health_every=1)
    m.watch([4], above=0.5)
    m.on_sparse_activation(torch.empty(2, 5, 8, dtype=torch.long, device="meta"),
                           torch.empty(2, 5, 8, device="meta"),
                           mask=torch.empty(2, 5, device="meta"))
    assert m._recording.stats.count.device.type == "meta"


def test_cofiring_of_eight_selected_features_runs_on_meta_tensors():
    m = FeatureMonitor(24, device="meta", selected=list(range(8)), top_k=4, compile=False)
    m.on_activation(torch.empty(2, 7, 24, device="meta"),
                    mask=torch.empty(2, 7, dtype=torch.long, device="meta"))
    m.on_activation(torch.empty(2, 7, 24, dtype=torch.bfloat16, device="meta"))
    m.on_sparse_activation(torch.empty(2, 5, 6, dtype=torch.long, device="meta"),
                           torch.empty(2, 5, 6, device="meta"),
                           mask=torch.empty(2, 5, device="meta"))
    assert m._recording.cofiring.both.device.type == "meta"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cofiring_calls_no_syncing_operator(dtype):
    m = FeatureMonitor(24, selected=list(range(8)), threshold=0.1, top_k=4, compile=False)
    acts = torch.relu(torch.randn(2, 6, 24)).to(dtype)
    guard = SyncGuard()
    with guard, torch.no_grad():
        for _ in range(2):
            m.on_activation(acts, mask=torch.ones(2, 6))
    assert guard.seen == []
    assert int(m._recording.cofiring.tokens[0]) == 24  # and it really counted


def test_cofiring_adds_no_syncing_operator_to_the_sparse_path():
    # On the CPU the sparse statistics keep a host table (read by design); co-firing of 8
    # selected features must not add a single syncing operator to what that path calls.
    def seen(selected):
        m = FeatureMonitor(24, selected=selected, threshold=0.1, top_k=4, compile=False)
        gen = torch.Generator().manual_seed(0)
        indices = torch.randint(0, 24, (2, 6, 5), generator=gen)
        values = torch.rand(2, 6, 5, generator=gen)
        guard = SyncGuard()
        with guard, torch.no_grad():
            for _ in range(2):
                m.on_sparse_activation(indices, values, mask=torch.ones(2, 6))
        return guard.seen, m

    plain, _ = seen([])
    with_cofiring, m = seen(list(range(8)))
    assert with_cofiring == plain
    assert int(m._recording.cofiring.tokens[0]) == 24


def test_logits_stay_off_the_hot_path(monkeypatch):
    """With an unembedding and the selected feature's logits shown in the panels, a forward
    computes no logits and reads nothing back: they are computed when asked, then cached."""
    from featmon_widget.monitor.query import logits

    calls = []
    original = logits.feature_logits
    monkeypatch.setattr(logits, "feature_logits",
                        lambda *a, **k: calls.append(a) or original(*a, **k))
    sae = _sae()
    m = FeatureMonitor.for_sae(sae, selected=[2], compile=False, health_every=1)
    m.set_unembedding(torch.randn(8, 50))
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    m.attach(model, "0", sae)
    assert "logits" in m.snapshot().feature_panels[0] and len(calls) == 1
    guard = SyncGuard()
    with guard, torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 6, 8))
    assert guard.seen == [] and len(calls) == 1
    m.snapshot()
    m.get_logits(2)
    assert len(calls) == 1


@pytest.mark.parametrize("native", [True, False])
def test_the_sample_of_activating_tokens_calls_no_syncing_operator(native):
    """Samples on (8 a feature): the dense and TopK paths, C kernel or torch merge."""
    m = FeatureMonitor(24, samples_per_feature=8, compile=False, native=native)
    gen = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(2, 6, 24, generator=gen))
    indices = torch.randint(0, 24, (2, 6, 5), generator=gen)
    guard = SyncGuard()
    with guard, torch.no_grad():
        m.on_activation(acts, mask=torch.ones(2, 6), token_ids=torch.ones(2, 6).long())
        m.on_activation(acts.to(torch.bfloat16))
        if not native:  # the CPU's TopK statistics keep a host table (read by design)
            m.on_sparse_activation(indices, torch.rand(2, 6, 5, generator=gen))
    assert guard.seen == []
    assert int((m._recording.samples.value > 0).sum()) > 0  # and it really sampled


def test_the_sample_runs_on_meta_tensors():
    m = FeatureMonitor(24, device="meta", samples_per_feature=4, compile=False)
    m.on_activation(torch.empty(2, 7, 24, device="meta"),
                    mask=torch.empty(2, 7, dtype=torch.long, device="meta"))
    m.on_sparse_activation(torch.empty(2, 5, 6, dtype=torch.long, device="meta"),
                           torch.empty(2, 5, 6, device="meta"))
    assert m._recording.samples.key.device.type == "meta"


def test_the_sample_riding_on_the_statistics_pass_calls_no_syncing_operator():
    """A dense forward big enough for one read to serve the statistics, the distributions and
    the sample."""
    from featmon_widget.monitor.record.samples import FUSED_MIN
    m = FeatureMonitor(4096, compile=False, native=True)
    acts = torch.relu(torch.randn(2, FUSED_MIN // 4096, 4096,
                                  generator=torch.Generator().manual_seed(0)) - 1.5)
    m.on_activation(acts)  # every slot empty: more candidates than the probe holds
    guard = SyncGuard()
    with guard, torch.no_grad():
        for x in (acts, acts.to(torch.bfloat16)):
            rows = x.reshape(-1, 4096).shape[0]
            assert m._recording.stats_rider(torch.ones(rows, dtype=torch.bool)).probe is not None
            m.on_activation(x)
    assert guard.seen == []
