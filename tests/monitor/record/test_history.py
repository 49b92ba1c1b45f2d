import torch

from featmon_widget.monitor.record.features import DenseFeatures, SparseFeatures
from featmon_widget.monitor.record.history import HistoryRing

CPU = torch.device("cpu")


def _write(ring, acts, valid=None, request="r"):
    n = acts.shape[0]
    valid = torch.ones(n, dtype=torch.bool) if valid is None else valid
    ring.write(DenseFeatures(acts), valid, torch.zeros(n, dtype=torch.long), torch.arange(n),
               request, 1.0)


def test_ring_keeps_the_last_valid_rows_in_order():
    ring = HistoryRing(4, 2, (1,), CPU)
    acts = torch.arange(30, dtype=torch.float32).reshape(10, 3)
    valid = torch.tensor([1, 1, 1, 1, 1, 1, 0, 1, 1, 0], dtype=torch.bool)
    _write(ring, acts, valid)
    rows = ring.read()
    assert rows.positions == [4, 5, 7, 8]
    assert rows.values == [[13.0], [16.0], [22.0], [25.0]]
    assert rows.top_idx[0] == [2, 1]
    assert ring.count() == 4


def test_ring_wraps_across_writes():
    ring = HistoryRing(5, 1, (), CPU)
    for i in range(4):
        _write(ring, torch.full((2, 3), float(i)), request=f"q{i}")
    rows = ring.read()
    assert rows.request_ids == ["q1", "q2", "q2", "q3", "q3"]
    assert len(ring.read(last=2)) == 2


def test_all_padding_writes_nothing():
    ring = HistoryRing(5, 1, (), CPU)
    _write(ring, torch.ones(3, 2), torch.zeros(3, dtype=torch.bool))
    assert ring.count() == 0


def test_memory_is_bounded_by_size_not_tokens():
    ring = HistoryRing(8, 2, (), CPU)
    before = ring.top_idx.numel()
    for _ in range(50):
        _write(ring, torch.rand(100, 4))
    assert ring.top_idx.numel() == before
    assert ring.names_held <= 8 + 1024


def test_resize_keeps_newest_records_and_pads():
    ring = HistoryRing(6, 2, (0, 1), CPU)
    _write(ring, torch.arange(24, dtype=torch.float32).reshape(8, 3))
    new = ring.resized(3, 3, (1, 2))
    rows = new.read()
    assert rows.positions == [5, 6, 7]
    assert [r[2] for r in rows.top_idx] == [-1, -1, -1]
    assert rows.values[0][0] == 16.0
    assert all(v != v for v in (r[1] for r in rows.values))  # feature 2 was never recorded: NaN


def test_clear_returns_count():
    ring = HistoryRing(6, 1, (), CPU)
    _write(ring, torch.rand(4, 2))
    assert ring.clear() == 4
    assert ring.count() == 0 and len(ring.read()) == 0


def test_sparse_features_give_the_same_records_as_dense():
    gen = torch.Generator().manual_seed(0)
    values, indices = torch.topk(torch.rand(6, 10, generator=gen), 3, dim=1)
    sparse = SparseFeatures(indices, values, 10)
    a, b = HistoryRing(4, 5, (0, 4), CPU), HistoryRing(4, 5, (0, 4), CPU)
    valid = torch.ones(6, dtype=torch.bool)
    rows, pos = torch.zeros(6, dtype=torch.long), torch.arange(6)
    a.write(DenseFeatures(sparse.dense()), valid, rows, pos, "r", 1.0)
    b.write(sparse, valid, rows, pos, "r", 1.0)
    ra, rb = a.read(), b.read()
    assert ra.values == rb.values
    assert [r[:3] for r in ra.top_idx] == [r[:3] for r in rb.top_idx]
    assert [r[3:] for r in rb.top_idx] == [[-1, -1]] * 4  # past the stored k
