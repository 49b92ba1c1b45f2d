import torch

from featmon_widget.monitor.record.features import DenseFeatures, SparseFeatures
from featmon_widget.monitor.stats.backend import Backend


def test_dense_top_and_columns_of_picked_rows_equal_the_gathered_rows():
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(64, 500, generator=gen)
    pick = torch.tensor([63, 0, 17, 17, 5])
    index = torch.tensor([499, 0, 42])
    dense = DenseFeatures(acts, Backend(native=True))
    idx, val = dense.top_of(pick, 10)
    want_idx, want_val = dense.rows(pick).top(10)  # distinct values: no tie to break
    assert torch.equal(idx, want_idx) and torch.equal(val, want_val)
    assert torch.equal(dense.columns_of(pick, index), dense.rows(pick).columns(index))
    half = DenseFeatures(acts.to(torch.float16), Backend(native=True))  # not the C's dtype
    assert torch.equal(half.top_of(pick, 3)[1], half.rows(pick).top(3)[1])


def test_bfloat16_rows_rank_as_their_float32_values_with_ties_to_the_lower_index():
    """The C kernel reads bfloat16 rows in place (no gather, no float copy): the same values as
    torch.topk over the widened rows, NaN first, equal values by index."""
    gen = torch.Generator().manual_seed(2)
    acts = torch.randn(40, 1000, generator=gen).to(torch.bfloat16)  # bfloat16: many ties
    acts[3, 700] = float("nan")
    acts[5, :] = 1.0  # a row that is one tie
    pick = torch.tensor([3, 5, 39, 0, 3])
    dense = DenseFeatures(acts, Backend(native=True))
    assert Backend(native=True).row_topk(acts, 16) is not None
    idx, val = dense.top_of(pick, 16)
    _, want_val = DenseFeatures(acts).rows(pick).top(16)
    exactly = {"rtol": 0, "atol": 0, "equal_nan": True}
    torch.testing.assert_close(val, want_val, **exactly)
    torch.testing.assert_close(acts.float()[pick].gather(1, idx.long()), val, **exactly)
    for r in range(len(pick)):
        for j in range(15):
            if val[r, j] == val[r, j + 1]:
                assert idx[r, j] < idx[r, j + 1]
    assert idx[1].tolist() == list(range(16)) and idx[0, 0] == 700


def test_sparse_top_and_columns_of_picked_rows():
    values, indices = torch.topk(torch.randn(8, 30, generator=torch.Generator().manual_seed(1)),
                                 4, dim=1)
    sparse = SparseFeatures(indices, values, 30)
    pick = torch.tensor([7, 2])
    assert all(torch.equal(a, b) for a, b in zip(sparse.top_of(pick, 6),
                                                  sparse.rows(pick).top(6), strict=True))
    index = torch.tensor([0, 29])
    assert torch.equal(sparse.columns_of(pick, index), sparse.rows(pick).columns(index))


def test_repeats_within_a_row_become_dropped_entries_on_both_paths():
    from featmon_widget.monitor.record.features import RepeatFilter

    indices = torch.tensor([[0, 0, 3, 0], [5, 2, 5, 9], [7, 7, 7, 7], [-4, -4, 40, 1]])
    original = indices.clone()
    want = torch.tensor([[0, -1, 3, -1], [5, 2, -1, 9], [7, -1, -1, -1], [-4, -4, 40, 1]])
    kernel = RepeatFilter(10, Backend(native=True))
    assert torch.equal(kernel(indices), want)  # the C kernel
    assert torch.equal(kernel(indices), want)  # stamps kept from the last call do not leak
    assert torch.equal(kernel(indices[2:]), want[2:])
    assert torch.equal(RepeatFilter(10, Backend(native=False))(indices), want)  # the row sort
    assert torch.equal(indices, original)  # the caller's tensor is never written


def test_sparse_top_never_reports_a_dropped_entry():
    sparse = SparseFeatures(torch.tensor([[4, -1, 99]]), torch.tensor([[1.0, 5.0, 7.0]]), 10)
    idx, val = sparse.top(3)
    assert idx.tolist() == [[4, -1, -1]] and val.tolist() == [[1.0, 0.0, 0.0]]
