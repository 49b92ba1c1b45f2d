"""What the monitor holds grows with d_sae only by the bytes per feature that
docs/design/memory.md gives, and a TopK update allocates nothing that grows with d_sae
(measured with torch's profiler)."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from featmon_widget import FeatureMonitor

TOKENS, K = 128, 32


def sparse_batch(d_sae: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    indices = torch.stack([torch.randperm(d_sae, generator=g)[:K] for _ in range(TOKENS)])
    values = torch.rand(TOKENS, K, generator=g) * 4
    token_ids = torch.randint(0, 50_000, (1, TOKENS), generator=g)
    return indices[None], values[None], token_ids


@pytest.mark.parametrize("examples", [8, 0])
def test_memory_per_part_is_the_documented_bytes_per_feature(examples):
    d_sae = 1 << 16
    monitor = FeatureMonitor(d_sae, compile=False, examples_per_feature=examples)
    before = monitor.state.memory_bytes
    assert before["statistics"] == 64 * d_sae and before["pending_topk"] == 0
    assert before["examples"] == 976 * d_sae * examples // 8
    assert before["distributions"] == 128 * d_sae  # 32 int32 bins a feature
    assert before["samples"] == 260 * d_sae  # 2 sampled tokens a feature, 130 bytes each
    indices, values, token_ids = sparse_batch(d_sae)
    monitor.on_sparse_activation(indices, values, token_ids=token_ids)
    state = monitor.state
    assert state.memory_bytes["pending_topk"] == 72 * (d_sae + 2)  # + two guard records
    assert state.device_bytes == sum(state.memory_bytes.values())
    # History, histograms, health and watches do not grow with d_sae.
    fixed = {part: b for part, b in state.memory_bytes.items()
             if part not in ("statistics", "pending_topk", "examples",
                             "distributions", "samples")}
    wide = FeatureMonitor(4 * d_sae, compile=False, examples_per_feature=examples)
    wide.on_sparse_activation(indices, values, token_ids=token_ids)
    assert {part: wide.state.memory_bytes[part] for part in fixed} == fixed


def largest_allocation(monitor: FeatureMonitor, batch) -> int:
    """Bytes of the largest single CPU allocation by any op in three steady TopK updates."""
    indices, values, token_ids = batch
    for _ in range(10):  # every example slot full, every lazy buffer made
        monitor.on_sparse_activation(indices, values, token_ids=token_ids)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(3):
            monitor.on_sparse_activation(indices, values, token_ids=token_ids)
    return max(e.cpu_memory_usage for e in prof.events())


def test_a_topk_update_allocates_nothing_that_grows_with_d_sae():
    sizes = {}
    for d_sae in (1 << 16, 1 << 20):
        monitor = FeatureMonitor(d_sae, compile=False, health_every=1)
        monitor.watch([1, 2, 3], above=0.5)
        sizes[d_sae] = largest_allocation(monitor, sparse_batch(1 << 16))
        monitor.close()
    # The batch's own arrays (tokens x k) are the largest: the same at both widths, and far
    # below one byte per feature at a million features.
    assert sizes[1 << 20] == sizes[1 << 16]
    assert 0 < sizes[1 << 20] < (1 << 20) // 8


def test_every_default_part_fits_96_mb_at_65536_features():
    """Statistics, distributions, top examples, samples, history and health, all defaults,
    after dense forwards (the CPU pass merges into the totals as it goes: it keeps no buffer
    between forwards)."""
    monitor = FeatureMonitor(65_536, compile=False, native=True)
    for _ in range(2):
        monitor.on_activation(torch.relu(torch.randn(8, 65_536) - 1.5))
    parts = monitor.state.memory_bytes
    monitor.close()
    assert {"statistics", "distributions", "examples", "samples"} <= {
        name for name, size in parts.items() if size}
    assert "scratch" not in parts
    assert sum(parts.values()) <= 96e6, parts
