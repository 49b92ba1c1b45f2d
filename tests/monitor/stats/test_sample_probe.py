"""One read for the statistics, the distributions and the sample (`stats/sample_probe.py`,
`stats/rider.py`): a dense CPU forward big enough to fuse gives exactly the sample and the
distributions of the separate passes (and of the torch path), whether the probe's buffer held
every candidate or overflowed."""

from collections import Counter

import pytest
import torch

from featmon_widget import FeatureMonitor
from featmon_widget.monitor.record import samples as samples_module
from featmon_widget.monitor.stats.backend import KERNELS, load_kernel

# Five tiles of the statistics pass (two parts, folded side by side), the last 149 wide: the
# AVX-512 probe's 32-value steps, then a masked 21-value tail.
F = 2 * 4096 + 149
SAMPLE = ("key", "value", "request", "row", "position", "tokens", "acts")


def _forwards(dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Forwards of 2 x 40 tokens (above FUSED_MIN values): sparse, some NaN / Inf / negative
    values, some ties, a mask."""
    gen = torch.Generator().manual_seed(3)
    out = []
    for i in range(6):
        x = torch.relu(torch.randn(2, 40, F, generator=gen) - (0.6 if i == 0 else 1.8))
        x = (x * 4).round() / 4  # ties
        x.view(-1)[7::997] = float("nan")
        x.view(-1)[11::1009] = float("inf")
        x.view(-1)[13::1013] = -2.0
        mask = torch.ones(2, 40)
        mask[1, :3] = 0
        ids = torch.randint(0, 500, (2, 40), generator=gen)
        out.append((x.to(dtype), mask, ids))
    return out


def _state(m: FeatureMonitor) -> dict[str, torch.Tensor]:
    rec = m._recording
    return {**{n: getattr(rec.samples, n).clone() for n in SAMPLE},
            "distributions": rec.distributions.counts.clone()}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal, NaN where the other is NaN."""
    if not a.is_floating_point():
        return torch.equal(a, b)
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


@pytest.fixture
def calls(monkeypatch) -> Counter:
    """Calls of the sample's and the statistics' C functions, by name."""
    counted: Counter = Counter()
    for name in ("examples", "dense"):
        wrapper = load_kernel(KERNELS[name])
        assert wrapper is not None
        real = wrapper.c

        class Counted:
            def __getattr__(self, attr, real=real):
                fn = getattr(real, attr)

                def call(*args):
                    counted[attr] += 1
                    return fn(*args)
                return call
        monkeypatch.setattr(wrapper, "c", Counted())
    return counted


@pytest.mark.parametrize("avx512", ["1", "0"])  # "0": the portable probe (FEATMON_AVX512)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_equals_separate_passes_and_torch(dtype, avx512, calls, monkeypatch):
    monkeypatch.setenv("FEATMON_AVX512", avx512)
    probes = []
    real_probe = samples_module.SampleTable.probe

    def probe(table, n):
        made = real_probe(table, n)
        if table is monitors["fused"]._recording.samples:
            probes.append(made)
        return made
    monkeypatch.setattr(samples_module.SampleTable, "probe", probe)
    monitors = {kind: FeatureMonitor(F, native=kind != "torch", compile=False,
                                     samples_per_feature=3, context_window=2)
                for kind in ("fused", "separate", "torch")}
    monitors["separate"]._recording.fuse_samples = False
    for i, (x, mask, ids) in enumerate(_forwards(dtype)):
        for m in monitors.values():
            m.on_activation(x, request_id=f"r{i}", mask=mask, token_ids=ids)
    fused, separate, plain = (_state(monitors[k]) for k in ("fused", "separate", "torch"))
    for name in fused:
        assert _same(fused[name], separate[name]), name
        assert _same(fused[name], plain[name]), name
    assert (fused["key"] != samples_module.EMPTY_KEY).all()
    # Six fused forwards; the first (every slot empty) overflowed its buffer and was folded
    # by the sample's own pass (inside featmon_sample_fused), the others from the candidates.
    assert [p is not None and p.filled for p in probes] == [True] * 6
    assert (probes[0].found == -1).any()
    assert all((p.found >= 0).all() for p in probes[1:])
    assert calls["featmon_sample_fused"] == 6 and calls["featmon_sample_dense"] == 6  # separate
    assert calls["featmon_dense_moments"] == 12  # one pass a forward, fused or separate


def test_small_forwards_take_the_separate_pass_and_distributions_off_still_fuse(calls):
    x = torch.relu(torch.randn(4, F))
    FeatureMonitor(F, native=True).on_activation(x)  # below FUSED_MIN values
    assert calls["featmon_sample_dense"] == 1 and calls["featmon_sample_fused"] == 0
    off = FeatureMonitor(F, native=True, distributions=False, compile=False)
    on = FeatureMonitor(F, native=True, compile=False)
    for m in (off, on):
        m.on_activation(x.repeat(80, 1))
    assert calls["featmon_sample_fused"] == 2 and calls["featmon_sample_dense"] == 1
    assert off.state.memory_bytes["distributions"] == 0
    for name in SAMPLE:
        assert _same(getattr(off._recording.samples, name), getattr(on._recording.samples, name))
