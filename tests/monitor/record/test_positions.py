import torch

from featmon_widget.monitor.record.positions import RequestPositions


def test_positions_continue_across_forwards_of_one_request():
    rp = RequestPositions()
    pos, valid = rp.assign("r", 2, 3, None, torch.device("cpu"))
    assert pos.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert valid.all()
    pos, _ = rp.assign("r", 2, 1, None, torch.device("cpu"))
    assert pos.tolist() == [[3], [3]]
    pos, _ = rp.assign("other", 2, 1, None, torch.device("cpu"))
    assert pos.tolist() == [[0], [0]]


def test_left_padding_counts_only_real_tokens():
    rp = RequestPositions()
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    pos, valid = rp.assign("r", 2, 4, mask, torch.device("cpu"))
    assert valid.tolist() == [[False, False, True, True], [True] * 4]
    assert pos[0, 2:].tolist() == [0, 1]
    assert pos[1].tolist() == [0, 1, 2, 3]
    # A cached decode step passes the whole mask: positions come from it.
    step = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
    pos, valid = rp.assign("r", 2, 1, step, torch.device("cpu"))
    assert pos.tolist() == [[2], [4]]
    assert valid.all()
    # Without a mask the next forward continues from there.
    pos, _ = rp.assign("r", 2, 1, None, torch.device("cpu"))
    assert pos.tolist() == [[3], [5]]


def test_bad_mask_shape_raises_and_keeps_state():
    rp = RequestPositions()
    rp.assign("r", 1, 2, None, torch.device("cpu"))
    try:
        rp.assign("r", 1, 3, torch.ones(2, 3), torch.device("cpu"))
    except ValueError as exc:
        assert "mask" in str(exc)
    else:
        raise AssertionError("expected ValueError")
    pos, _ = rp.assign("r", 1, 1, None, torch.device("cpu"))
    assert pos.tolist() == [[2]]


def test_absolute_position_ids_skip_a_re_fed_prefix():
    rp = RequestPositions()
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    ids = torch.tensor([[0, 0, 1], [0, 1, 2]])
    pos, valid = rp.assign("r", 2, 3, mask, torch.device("cpu"), ids)
    assert valid.tolist() == [[False, True, True], [True, True, True]]
    # The next step re-feeds everything plus one new token per row: only that one is valid.
    mask2 = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
    ids2 = torch.tensor([[0, 0, 1, 2], [0, 1, 2, 3]])
    pos, valid = rp.assign("r", 2, 4, mask2, torch.device("cpu"), ids2)
    assert valid.tolist() == [[False, False, False, True], [False, False, False, True]]
    assert pos[:, -1].tolist() == [2, 3]
