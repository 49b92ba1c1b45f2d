import torch

from featmon_widget.snapshot.transfer import start_copy


def test_cpu_copies_are_independent_of_later_in_place_updates():
    t = torch.arange(4)
    wait = start_copy([t, t * 2])
    t += 100
    a, b = wait()
    assert a.tolist() == [0, 1, 2, 3] and b.tolist() == [0, 2, 4, 6]


def test_empty_list():
    assert start_copy([])() == []
