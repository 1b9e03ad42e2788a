"""cmkd.runtime: device selection, seeds, generators and torch's CPU threads."""

import random

import numpy as np
import pytest
import torch

from cmkd.runtime import (
    device_available,
    rng_for,
    seed_everything,
    seed_for,
    select_device,
    torch_threads,
)


def test_device_selection():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert select_device("auto").type == expected
    assert select_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            select_device("cuda")
        with pytest.raises(ValueError, match="CUDA is not available"):
            device_available("cuda:0")
    device_available("cpu")


def test_seed_for_is_stable_and_distinct():
    assert seed_for(0, 1, 2) == seed_for(0, 1, 2)
    assert len({seed_for(0, s, r) for s in range(5) for r in range(5)}) == 25
    assert 0 <= seed_for(7) < 2**63


def test_rng_for_is_numpys_seed_sequence_of_the_key():
    a, b = rng_for(3, 1, 4).standard_normal(5), rng_for(3, 1, 4).standard_normal(5)
    np.testing.assert_array_equal(a, b)
    ref = np.random.default_rng(np.random.SeedSequence([3, 1, 4])).standard_normal(5)
    np.testing.assert_array_equal(a, ref)
    assert not np.array_equal(a, rng_for(3, 1, 5).standard_normal(5))


def test_seed_everything_seeds_python_numpy_and_torch():
    seed_everything(11)
    first = (random.random(), np.random.rand(), torch.rand(()).item())
    seed_everything(11)
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == first


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"), torch_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
