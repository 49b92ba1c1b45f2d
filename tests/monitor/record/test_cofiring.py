"""Co-firing counts (`record.cofiring`) against an offline float64 numpy count of the tokens
where both features are above the threshold, over the same tokens: dense fp32 / bf16, sparse
TopK, padding masks, a selection changed mid-stream, reset, threshold change, save / load and
the int64 widening."""

import numpy as np
import pytest
import torch

from featmon_widget import FeatureMonitor
from featmon_widget.monitor.record import cofiring as cf
from featmon_widget.monitor.record.cofiring import CoFiring, floor_in

pytestmark = pytest.mark.fast
D = 48


def batches(seed, n=4, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        acts = (torch.randn(3, 5 + i, D, generator=gen) - 0.3).to(dtype)
        acts[0, 0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
        mask = (torch.rand(3, 5 + i, generator=gen) > 0.25).long()
        out.append((acts, mask))
    return out


def reference(rows, threshold, selected):
    """float64 counts over `rows` [(acts [N, D] float64, valid [N])]: both, own, tokens."""
    acts = np.concatenate([a for a, _ in rows]) if rows else np.zeros((0, D))
    valid = np.concatenate([v for _, v in rows]) if rows else np.zeros(0, bool)
    on = (acts > threshold) & valid[:, None]
    both = np.stack([(on[:, s:s + 1] & on).sum(0) for s in selected])
    own = np.broadcast_to(on.sum(0), both.shape)
    return both, own, int(valid.sum())


def flat_rows(acts, mask):
    return (acts.double().reshape(-1, D).numpy(), mask.reshape(-1).numpy() != 0)


def assert_counts(monitor, want, selected):
    part = monitor._recording.cofiring
    assert part.features == tuple(selected)
    for j in range(len(selected)):
        both, own, tokens = part.totals(j)
        assert np.array_equal(both.numpy(), want[j][0]), j
        assert np.array_equal(own.numpy(), want[j][1]), j
        assert int(tokens) == want[j][2], j


# The C kernel (the CPU's path) and the torch path (every other device).
PATHS = pytest.mark.parametrize("native", [True, False], ids=["C kernel", "torch"])


@PATHS
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("threshold", [0.0, 0.1, -0.05])
def test_dense_counts_equal_offline_counts(dtype, threshold, native):
    selected = (0, 7, 30)
    m = FeatureMonitor(D, selected=selected, threshold=threshold, native=native)
    assert (m._recording.backend.cofiring(torch.zeros(1, D, dtype=dtype), 3) is not None) == (
        native and dtype != torch.float16)
    rows = []
    for acts, mask in batches(1, dtype=dtype):
        m.on_activation(acts, mask=mask)
        rows.append(flat_rows(acts, mask))
    both, own, tokens = reference(rows, threshold, selected)
    assert_counts(m, [(both[j], own[j], tokens) for j in range(3)], selected)
    assert both.max() > 0


@PATHS
def test_the_threshold_is_compared_exactly_in_bf16(native):
    # 0.1 is no bf16 value: bf16(0.1) > 0.1 in float64, but not when 0.1 is rounded to bf16.
    value = torch.tensor(0.1).to(torch.bfloat16)
    assert float(value) > 0.1 and not bool(value > 0.1)
    m = FeatureMonitor(4, selected=[0], threshold=0.1, native=native)
    m.on_activation(torch.full((1, 2, 4), float(value)).to(torch.bfloat16))
    assert int(m._recording.cofiring.both[0, 1]) == 2


def test_floor_in_agrees_with_float64_comparison():
    gen = np.random.default_rng(0)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        values = torch.randn(4000, generator=torch.Generator().manual_seed(2)).to(dtype)
        values = torch.cat([values, values.neg(), torch.zeros(1), torch.tensor([-0.0])]).to(dtype)
        for threshold in [0.0, -0.0, 0.1, -0.1, 1e-50, -1e-50, 7e4, -7e4,
                          *gen.normal(size=40).tolist()]:
            t = floor_in(dtype, threshold)
            assert torch.equal(values > t, values.double() > threshold), (dtype, threshold)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sparse_counts_equal_offline_counts_of_the_dense_form(dtype):
    selected = (2, 5)
    m = FeatureMonitor(D, selected=selected, top_k=4, threshold=0.05)
    gen = torch.Generator().manual_seed(3)
    rows = []
    for _ in range(4):
        idx = torch.stack([torch.randperm(D, generator=gen)[:6] for _ in range(10)])
        idx = idx.reshape(2, 5, 6)
        some = idx % 3 == 0  # make the selected features common (and some repeats)
        idx[some] = torch.tensor([2, 5])[torch.randint(0, 2, (int(some.sum()),), generator=gen)]
        idx[0, 0, 0] = -1  # dropped
        vals = (torch.rand(2, 5, 6, generator=gen) - 0.2).to(dtype)
        mask = (torch.rand(2, 5, generator=gen) > 0.2).long()
        m.on_sparse_activation(idx, vals, mask=mask)
        # The monitor's dense meaning: repeats after the first dropped, -1 ignored.
        dense = torch.zeros(10, D, dtype=torch.float64)
        for r, (i_row, v_row) in enumerate(zip(idx.reshape(10, 6),
                                               vals.double().reshape(10, 6), strict=True)):
            seen = set()
            for i, v in zip(i_row.tolist(), v_row.tolist(), strict=True):
                if 0 <= i < D and i not in seen:
                    dense[r, i] = v
                    seen.add(i)
        rows.append((dense.numpy(), mask.reshape(-1).numpy() != 0))
    both, own, tokens = reference(rows, 0.05, selected)
    assert_counts(m, [(both[j], own[j], tokens) for j in range(2)], selected)
    assert both[0, 5] > 0


@PATHS
def test_a_selection_change_starts_new_features_at_zero_and_keeps_the_others(native):
    m = FeatureMonitor(D, selected=(1, 4), native=native)
    data = batches(4, n=5)
    rows = []
    for acts, mask in data[:2]:
        m.on_activation(acts, mask=mask)
        rows.append(flat_rows(acts, mask))
    m.configure(selected=(4, 9))
    later = []
    for acts, mask in data[2:]:
        m.on_activation(acts, mask=mask)
        later.append(flat_rows(acts, mask))
    b_all, o_all, t_all = reference(rows + later, 0.0, (4,))
    b_new, o_new, t_new = reference(later, 0.0, (9,))
    assert_counts(m, [(b_all[0], o_all[0], t_all), (b_new[0], o_new[0], t_new)], (4, 9))


@pytest.mark.parametrize("how", ["reset", "threshold"])
def test_reset_and_threshold_change_clear(how):
    m = FeatureMonitor(D, selected=(3,))
    acts, mask = batches(5, n=1)[0]
    m.on_activation(acts, mask=mask)
    assert int(m._recording.cofiring.tokens[0]) > 0
    if how == "reset":
        m.reset_statistics()
    else:
        m.configure(threshold=0.2)
    part = m._recording.cofiring
    assert int(part.both.abs().sum() + part.own.abs().sum() + part.tokens.sum()) == 0
    m.on_activation(acts, mask=mask)
    both, own, tokens = reference([flat_rows(acts, mask)], 0.0 if how == "reset" else 0.2, (3,))
    assert_counts(m, [(both[0], own[0], tokens)], (3,))


def test_save_and_load_keep_the_counts(tmp_path):
    m = FeatureMonitor(D, selected=(3, 11))
    for acts, mask in batches(6):
        m.on_activation(acts, mask=mask)
    m.save(tmp_path / "s")
    back = FeatureMonitor.load(tmp_path / "s")
    for name in ("both", "own", "tokens"):
        assert torch.equal(getattr(back._recording.cofiring, name),
                           getattr(m._recording.cofiring, name))
    assert back.get_cofiring(3) == m.get_cofiring(3)


@PATHS
def test_counts_become_int64_before_they_could_overflow(monkeypatch, native):
    monkeypatch.setattr(cf, "INT32_MAX", 40)
    m = FeatureMonitor(D, selected=(0, 1), native=native)
    rows = []
    for acts, mask in batches(7, n=4):
        m.on_activation(acts, mask=mask)
        rows.append(flat_rows(acts, mask))
    part = m._recording.cofiring
    assert part.both.dtype == part.own.dtype == torch.int64
    both, own, tokens = reference(rows, 0.0, (0, 1))
    assert_counts(m, [(both[j], own[j], tokens) for j in range(2)], (0, 1))


def test_many_rows_and_columns_run_in_exact_blocks(monkeypatch):
    monkeypatch.setattr(cf, "EXACT_ROWS", 4)
    monkeypatch.setattr(cf, "BLOCK_ELEMENTS", 20)
    m = FeatureMonitor(D, selected=(0, 5), native=False)
    acts, mask = batches(8, n=1)[0]
    m.on_activation(acts, mask=mask)
    both, own, tokens = reference([flat_rows(acts, mask)], 0.0, (0, 5))
    assert_counts(m, [(both[j], own[j], tokens) for j in range(2)], (0, 5))


def test_memory_at_8_selected_features():
    part = CoFiring(tuple(range(8)), 65_536, torch.device("meta"))
    assert part.memory_bytes() == {"cofiring": 2 * 8 * 65_536 * 4 + 8 * 8}
    assert FeatureMonitor(D).state.memory_bytes["cofiring"] == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_threaded_c_kernel_counts_exactly(dtype):
    # 96 x 4099 values: past the size where the kernel splits the features among threads
    # (and a width that is no multiple of its blocks).
    d = 4099
    gen = torch.Generator().manual_seed(9)
    acts = (torch.randn(2, 48, d, generator=gen) - 1.0).to(dtype)
    mask = (torch.rand(2, 48, generator=gen) > 0.1).long()
    selected = tuple(range(0, d, 600))[:8]
    m = FeatureMonitor(d, selected=selected, threshold=0.25, native=True)
    m.on_activation(acts, mask=mask)
    valid = mask.reshape(-1).numpy() != 0
    on = (acts.double().reshape(-1, d).numpy() > 0.25) & valid[:, None]
    part = m._recording.cofiring
    for j, s in enumerate(selected):
        both, own, tokens = part.totals(j)
        assert np.array_equal(both.numpy(), (on[:, s:s + 1] & on).sum(0)), s
        assert np.array_equal(own.numpy(), on.sum(0))
        assert int(tokens) == valid.sum()


def test_a_reselection_keeps_the_other_ranks_counts_of_features_still_selected():
    part = CoFiring((2, 5), D, torch.device("cpu"))
    part.take_remote({"both": torch.arange(2 * D).reshape(2, D), "own": torch.ones(2, D,
                      dtype=torch.int64), "tokens": torch.tensor([7, 9])})
    new = part.reselected((5, 8))
    assert torch.equal(new.remote["both"][0], torch.arange(D, 2 * D))
    assert int(new.remote["both"][1].abs().sum()) == 0
    assert new.remote["tokens"].tolist() == [9, 0]
    assert int(new.totals(0)[2]) == 9
    assert new.memory_bytes()["cofiring"] > part.memory_bytes()["cofiring"] // 2
