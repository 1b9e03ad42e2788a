"""Where and how reproducibly a run computes: device selection, seeding, torch's CPU threads.

Every other module asks here: :func:`select_device` for 'auto' / 'cpu' / 'cuda' / 'mps',
:func:`seed_everything` before a run, :func:`rng_for` and :func:`seed_for` for generators and
seeds determined by a tuple of integers (a setting, a run, a phase), :func:`torch_threads` for a
block that should run on a given number of CPU threads, :func:`die_with_parent` for the worker
processes a run starts.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def select_device(preference: str = "auto") -> torch.device:
    """The device to compute on: cuda, then mps, then cpu for 'auto'; otherwise as asked.

    Raises a clear error when the requested device is not available here.
    """
    if preference not in DEVICES and not preference.startswith("cuda:"):
        raise ValueError(f"device must be one of {DEVICES} or 'cuda:N', got {preference!r}")
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {preference!r} was requested but CUDA is not available; "
                           "use device: auto or cpu")
    if preference == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device 'mps' was requested but MPS is not available; "
                           "use device: auto or cpu")
    return torch.device(preference)


def device_available(preference: str) -> None:
    """Raise ValueError when ``preference`` names a device this machine does not have (for
    params validation: a run asking for CUDA on a machine without it stops before compute)."""
    try:
        select_device(preference)
    except RuntimeError as err:
        raise ValueError(str(err)) from None


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (for code that uses them)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_for(*key: int) -> np.random.Generator:
    """A NumPy generator determined by a tuple of non-negative integers (seed, setting, run...)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def seed_for(*key: int) -> int:
    """A 63-bit integer seed determined by a tuple of non-negative integers."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(2, np.uint64)[0] >> 1)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` torch CPU threads (unchanged for None), restoring the number after.

    Small models make many tiny operations; on a CPU one thread runs them faster than several
    (each parallel region costs more than it saves) and is not slowed down when other processes
    share the cores.
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, before)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def die_with_parent(parent: int | None = None) -> None:  # pragma: no cover - in a child
    """Linux: this process gets SIGKILL when its parent dies (even by SIGKILL), so no worker
    outlives the notebook or command that started it: the pool workers of
    :class:`cmkd.jobs.ProcessExecutor`, the DataLoader workers of every loader
    (:func:`cmkd.engine.make_loader`), the kernels of ``cmkd reproduce``.  Elsewhere: nothing.

    The signal comes when the *thread* that started this process ends: call it in processes
    started by a thread that lives as long as its work (the main thread, a loader's).
    ``parent``: the pid of the process that started this one; if it died before the signal
    was asked for (a spawned child imports for seconds first), this process ends at once."""
    import ctypes
    import os
    import signal
    import sys

    if sys.platform != "linux":
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
