"""USKD: universal self-knowledge distillation (Yang et al., ICCV 2023; C2KD Table 6).

No teacher: ``ce_weight * CE + uskd_loss(student, y, weak=...)`` (:func:`cmkd.distill.uskd_loss`):
a normalized target term with the soft label ``(p^t)^2 + 1 - batch mean``, Zipf non-target soft
labels ranked with the help of a weak logit, and the weak head's own smoothed-label loss.
Defaults alpha 1, beta 0.1, mu 0.005 (the official code, yzd-v/cls_KD ``USKDLoss``, ImageNet
settings), which keeps the cross entropy beside the USKD loss.

The weak head is the method's extra module ``extra['weak']``: global average pooling, then a
linear layer to the classes, on an intermediate feature: ``weak_feature`` (default 'layer3', the
stage before the last one, which the official code reads on ResNets; models without a 'layer3'
use 'pooled').  ``weak=False`` drops it (the ranking then uses the student's logits alone).
With ``runs`` the head is a :class:`cmkd.models.batched.BatchedLinear` seeded from ``run_seeds()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from cmkd.distill import uskd_loss
from cmkd.methods.base import (
    Method,
    model_feature_shapes,
    pool_features,
    register,
    resolve_feature,
)
from cmkd.models.batched import BatchedLinear
from cmkd.params import spec


@register
class USKD(Method):
    """USKD with its weak-logit head (no teacher)."""

    name = "uskd"
    needs_teacher = False

    @dataclass(frozen=True)
    class Hparams:
        alpha: float = field(default=1.0, metadata=spec("weight of the target term", low=0))
        beta: float = field(default=0.1, metadata=spec("weight of the non-target term", low=0))
        mu: float = field(default=0.005, metadata=spec("weight of the weak-supervision term",
                                                       low=0))
        power: float = field(default=1.0, metadata=spec("the Zipf exponent", low=0,
                                                        low_open=True))
        weak: bool = field(default=True, metadata=spec("build and train the weak-logit head"))
        weak_feature: str = field(default="layer3", metadata=spec(
            "the student feature the weak head reads ('layer3' falls back to 'pooled' on "
            "models without it)"))
        ce_weight: float = field(default=1.0, metadata=spec(
            "weight of the cross entropy on labels", low=0))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.weak_feature = None
        if self.hp.weak:
            fallback = "pooled" if self.hp.weak_feature == "layer3" else None
            self.weak_feature = resolve_feature(self.student, self.hp.weak_feature, "student",
                                                self.name, fallback)
            dim = model_feature_shapes(self.student)[self.weak_feature][0]
            self.extra["weak"] = (BatchedLinear(dim, self.classes, self.run_seeds(23))
                                  if self.runs else nn.Linear(dim, self.classes))

    def step(self, batch, epoch):
        y = batch["label"]
        weak = None
        if self.weak_feature is None:
            logits = self.student_forward(batch)
        else:
            logits, feats = self.student_forward(batch, features=True)
            weak = self.extra["weak"](pool_features(feats[self.weak_feature], self.runs))
        ce = self.supervised_loss(logits, y)
        uskd = uskd_loss(logits, y, weak=weak, alpha=self.hp.alpha, beta=self.hp.beta,
                         mu=self.hp.mu, power=self.hp.power, runs=self.runs)
        total = self.hp.ce_weight * ce + uskd
        return {"total": total, "ce": ce.detach(), "uskd": uskd.detach()}
