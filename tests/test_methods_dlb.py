"""cmkd.methods.dlb.dlb_batches: DLB's batch order (each batch starts with the samples that ended
the previous one).  The method's steps are tested with the other logit methods
(test_methods_logit.py)."""
import pytest
import torch

from cmkd.methods.dlb import dlb_batches


def test_dlb_batches_repeat_half_of_the_previous_batch():
    batches = dlb_batches(20, 8, torch.Generator().manual_seed(0))
    assert sorted(torch.cat([batches[0]] + [b[4:] for b in batches[1:]]).tolist()) == \
        list(range(20))
    for prev, cur in zip(batches, batches[1:]):
        assert cur[:4].tolist() == prev[-4:].tolist()
    assert [len(b) for b in batches] == [4, 8, 8, 8, 8]


def test_dlb_batches_with_a_short_last_half():
    batches = dlb_batches(7, 4, torch.Generator().manual_seed(1))
    assert [len(b) for b in batches] == [2, 4, 4, 3]  # halves of 2, 2, 2, 1
    assert sorted(torch.cat([batches[0]] + [b[2:] for b in batches[1:]]).tolist()) == \
        list(range(7))


def test_dlb_batches_follow_the_generator():
    a = dlb_batches(12, 4, torch.Generator().manual_seed(5))
    b = dlb_batches(12, 4, torch.Generator().manual_seed(5))
    assert [x.tolist() for x in a] == [y.tolist() for y in b]
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(5))
    assert a[0].tolist() == perm[:2].tolist()


def test_dlb_batches_refuse_a_batch_without_two_halves():
    with pytest.raises(ValueError, match="batch_size must be >= 2, got 1"):
        dlb_batches(10, 1)
