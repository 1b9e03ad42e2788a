"""Which samples a logit-distillation method distils: C2KD Table 2's "+KRC" and "+Random".

C2KD Section 3.1 checks that soft-label misalignment hurts crossmodal KD by distilling only the
samples whose teacher and student logits agree in rank (the filter of its on-the-fly selection,
Eq. 4: Kendall's tau-a > omega, :func:`cmkd.distill.c2kd.ofsd_mask`; "+KRC") and, as the control,
by dropping as many samples per batch at random ("+Random", :func:`cmkd.distill.c2kd.random_mask`).
KD and DKD (hence the TCKD and NCKD presets) take the choice as hyperparameters ``select``
('none', 'krc', 'random') and ``select_omega``; the distillation term is then averaged over the
kept samples of each batch (a batch with none kept contributes 0).  The cross entropy on labels
always covers the whole batch.

Section 3.1's text says "filter out samples with KRC < 0", which would keep KRC = 0; the filter
here is Eq. 4's (strict ``> omega``), the one C2KD trains with.  A tie at exactly 0 needs an even
number of class pairs to split evenly, so the two readings differ only on such samples.

The random draws come from a CPU generator of the method, seeded at its first draw from torch's
global generator (which the job runner seeds), or from the run seeds of a stack of runs: a job's
masks are the same on every rerun.
"""

from __future__ import annotations

from dataclasses import field

import torch

from cmkd.distill import ofsd_mask, random_mask
from cmkd.params import spec

SELECTIONS = ("none", "krc", "random")


def select_field():
    """The ``select`` hyperparameter of a method that can filter its distilled samples."""
    return field(default="none", metadata=spec(
        "which samples the KD term distils: all ('none'), those whose teacher and student "
        "logits have KRC > select_omega ('krc', C2KD Table 2 '+KRC'), or as many as 'krc' "
        "keeps, chosen at random per batch ('random', '+Random')", choices=SELECTIONS))


def omega_field():
    """The ``select_omega`` hyperparameter: the KRC threshold of ``select``."""
    return field(default=0.0, metadata=spec(
        "KRC threshold of select 'krc' / 'random' (kept when KRC > omega)", low=-1, high=1))


class Selection:
    """The per-batch sample mask of a method's ``select`` choice.

    kind : one of :data:`SELECTIONS`; omega : the KRC threshold; seed : of the generator of the
    'random' draws (None: drawn from torch's global generator, only for 'random').
    """

    def __init__(self, kind: str, omega: float = 0.0, seed: int | None = None):
        if kind not in SELECTIONS:
            raise ValueError(f"select must be one of {SELECTIONS}, got {kind!r}")
        self.kind, self.omega, self.seed = kind, float(omega), seed
        self.generator: torch.Generator | None = None

    def _generator(self) -> torch.Generator:
        """The generator of the 'random' draws, made at the first draw (a job's checks build
        the method without training it, on the meta device)."""
        if self.generator is None:
            seed = self.seed
            if seed is None:
                seed = int(torch.randint(0, 2**31 - 1, (1,), device="cpu"))
            self.generator = torch.Generator().manual_seed(int(seed))
        return self.generator

    @torch.no_grad()
    def mask(self, teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor | None:
        """(..., batch) bool of the samples to distil, from the logits (..., batch, classes);
        None for 'none' (every sample)."""
        if self.kind == "none":
            return None
        keep = ofsd_mask(teacher.detach(), student.detach(), self.omega, "krc")
        return keep if self.kind == "krc" else random_mask(keep, self._generator())


def selection_of(method) -> Selection:
    """The :class:`Selection` of a built method from its ``hp.select`` / ``hp.select_omega``
    (a stack of runs seeds the 'random' draws from its run seeds)."""
    kind = method.hp.select
    seed = method.run_seeds(23)[0] if (method.runs and kind == "random") else None
    return Selection(kind, method.hp.select_omega, seed)
