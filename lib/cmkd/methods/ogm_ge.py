"""OGM-GE (Peng et al., CVPR 2022): on-the-fly gradient modulation with generalisation
enhancement, for training a late-fusion multimodal network (C2KD Table 7's 'OGM' teacher).

Each step: cross entropy on the fused logits; after ``backward()`` each modality's encoder
gradients are scaled by ``k_u = 1 - tanh(alpha * rho_u)`` for the dominant modality (Eq. 10,
:func:`cmkd.models.fusion.ogm_ge_coefficients`) and Gaussian noise of the gradient's standard
deviation is added (GE; :func:`cmkd.models.fusion.ogm_ge_modulate_`), during the epochs
``[modulation_start, modulation_end)`` as the official code's ``--modulation_starts/ends``
(0 and 50).  The model must be a concatenation fusion (``fusion_ogm_ge`` or
``fusion_concat``): FiLM's classifier does not split per modality.  ``alpha`` 0.8 follows the
example command of the official README (the script itself has no default).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cmkd.methods.base import Method, register
from cmkd.models.fusion import LateFusion, ogm_ge_coefficients, ogm_ge_modulate_
from cmkd.params import ParamError, spec


@register
class OGMGE(Method):
    """Supervised training of a fusion model with OGM-GE gradient modulation (no teacher)."""

    name = "ogm_ge"
    needs_teacher = False

    @dataclass(frozen=True)
    class Hparams:
        alpha: float = field(default=0.8, metadata=spec(
            "modulation strength alpha of Eq. 10", low=0, low_open=True))
        modulation_start: int = field(default=0, metadata=spec(
            "first epoch with modulation", low=0))
        modulation_end: int = field(default=50, metadata=spec(
            "epoch from which modulation stops", low=0))
        ge: bool = field(default=True, metadata=spec(
            "add the Gaussian noise (OGM-GE); False: OGM only"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.student, LateFusion) or self.student.film is not None:
            raise ParamError("method", "ogm_ge trains a concatenation late-fusion model "
                                       "('fusion_ogm_ge' or 'fusion_concat'), got "
                                       f"{type(self.student).__name__}")
        self._k: tuple[torch.Tensor, torch.Tensor] | None = None
        self._generator: torch.Generator | None = None

    def step(self, batch, epoch):
        logits, feats = self.student_forward(batch, features=True)
        y = batch["label"]
        ce = self.supervised_loss(logits, y)
        self._k = None
        if self.hp.modulation_start <= epoch < self.hp.modulation_end:
            self._k = ogm_ge_coefficients(*self.student.unimodal_logits(feats), y,
                                          alpha=self.hp.alpha)
        out = {"total": ce, "ce": ce.detach()}
        if self._k is not None:
            out["k_" + self.student.modalities[0]] = self._k[0]
            out["k_" + self.student.modalities[1]] = self._k[1]
        return out

    def after_backward(self, epoch: int) -> None:
        if self._k is None:
            return
        device = next(self.student.parameters()).device
        if self._generator is None or self._generator.device != device:
            # seeded from torch's global generator, itself seeded by the training loop
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
            self._generator = torch.Generator(device=device).manual_seed(seed)
        ogm_ge_modulate_(self.student, self._k, ge=self.hp.ge, generator=self._generator)
