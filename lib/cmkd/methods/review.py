"""Review KD (Chen et al., CVPR 2021, "Distilling Knowledge via Knowledge Review"): the student's
stages fused deep-to-shallow by attention-based fusion
(:class:`cmkd.models.auxiliary.ReviewFusion`) and
compared with the teacher's stages by the hierarchical context loss (:func:`cmkd.distill.hcl_loss`).

``ce_weight * CE(s, y) + review_weight * min((epoch + 1) / warmup_epochs, 1) * HCL``, the
defaults of mdistiller (megvii-research, ``CFG.REVIEWKD``): weights 1 and 1, a 20-epoch linear
warm-up (mdistiller counts epochs from 1, the engine from 0, hence ``epoch + 1``), middle
channels ``min(max_mid_channels=512, the deepest student stage's channels)``, and the stages:
every feature map of the network plus the pooled features as a 1x1 map (mdistiller's
``feats + [pooled_feat]``; a ResNet's layer1..layer4 and pooled).

Layers are listed by name, shallow to deep, one teacher layer per student layer.  'auto' (the
default, on both sides) takes every (channels, H, W) map and 'pooled'; when the two models have
different numbers of maps (crossmodal pairs may differ in architecture) the deepest maps of each
are paired.  Vectors (such as 'pooled') enter as (batch, dim, 1, 1) maps.

Departure, for crossmodal pairs: where a teacher map's spatial size differs from the student's
(mdistiller resizes the fused student map to the teacher's by nearest interpolation), the
teacher's map is adaptively average-pooled to the student's size
(:func:`cmkd.methods.layers.match_spatial`), as :mod:`cmkd.methods.fitnet` does.  Not for
batched runs (no maps there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cmkd.distill import dkd_warmup, review_loss
from cmkd.methods.base import Method, register
from cmkd.methods.layers import (
    AUTO,
    check_layer,
    feature_shapes,
    map_layers,
    match_spatial,
    resolve_pairs,
)
from cmkd.models.auxiliary import ReviewFusion
from cmkd.params import ParamError, spec


def as_map(features: torch.Tensor) -> torch.Tensor:
    """(batch, C, H, W) maps as they are, (batch, dim) vectors as (batch, dim, 1, 1)."""
    return features[:, :, None, None] if features.dim() == 2 else features


@register
class Review(Method):
    """Knowledge review from a frozen teacher; the fusion modules in ``extra['fusion']``."""

    name = "review"

    @dataclass(frozen=True)
    class Hparams:
        student_layers: list[str] = field(default_factory=lambda: [AUTO], metadata=spec(
            "student stages, shallow to deep ('auto': every map and 'pooled')", min_items=1,
            unique=False))
        teacher_layers: list[str] = field(default_factory=lambda: [AUTO], metadata=spec(
            "teacher stages, one per student stage ('auto': every map and 'pooled')",
            min_items=1, unique=False))
        ce_weight: float = field(default=1.0, metadata=spec(
            "weight of the cross entropy on labels", low=0))
        review_weight: float = field(default=1.0, metadata=spec(
            "weight of the HCL term (mdistiller: 1)", low=0))
        warmup_epochs: int = field(default=20, metadata=spec(
            "epochs of the linear warm-up of the HCL weight (0: none)", low=0))
        max_mid_channels: int = field(default=512, metadata=spec(
            "cap on the fusion's middle channels (mdistiller: 512)", low=1))

    def __init__(self, hp=None, **kwargs):
        super().__init__(hp, **kwargs)
        if self.runs:
            raise ValueError(f"method {self.name!r} fuses feature maps; it has no batched "
                             f"(runs=True) form")
        s_shapes = feature_shapes(self.student, "student", self.name)
        t_shapes = feature_shapes(self.teacher, "teacher", self.name)
        student, teacher = self._stages(self.hp.student_layers, s_shapes, "student"), \
            self._stages(self.hp.teacher_layers, t_shapes, "teacher")
        if self.hp.student_layers == [AUTO] and self.hp.teacher_layers == [AUTO]:
            k = min(len(student), len(teacher)) - 1  # the deepest k maps of each, then pooled
            student, teacher = student[-1 - k:], teacher[-1 - k:]
        self.layers = resolve_pairs(student, teacher, method=self.name)
        s_channels = [s_shapes[n][0] for n in student]
        t_channels = [t_shapes[n][0] for n in teacher]
        mid = min(self.hp.max_mid_channels, s_channels[-1])
        self.extra["fusion"] = ReviewFusion(s_channels, t_channels, mid)

    def _stages(self, names: list[str], shapes, role: str) -> list[str]:
        param = f"{role}_layers"
        if AUTO in names:
            if names != [AUTO]:
                raise ParamError(param, f"'auto' stands alone (every map and 'pooled'), got "
                                        f"{names}", f"method {self.name!r}")
            return map_layers(shapes) + ["pooled"]
        return [check_layer(n, shapes, param=param, method=self.name, role=role)
                for n in names]

    def stage_maps(self, student_features, teacher_features
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The student's and the teacher's stage maps, the teacher's at the student's sizes."""
        fs = [as_map(student_features[s]) for s, _ in self.layers]
        ft = [match_spatial(as_map(teacher_features[t]), f)
              for (_, t), f in zip(self.layers, fs)]
        return fs, ft

    def warmup(self, epoch: int) -> float:
        """mdistiller's factor ``min(epoch / warmup_epochs, 1)`` with its epochs counted from 1."""
        return dkd_warmup(epoch + 1, self.hp.warmup_epochs)

    def step(self, batch, epoch):
        logits, fs = self.student_forward(batch, features=True)
        _, ft = self.teacher_forward(batch, features=True)
        ce = self.supervised_loss(logits, batch["label"])
        hcl = review_loss(*self.stage_maps(fs, ft), fusion=self.extra["fusion"])
        total = self.hp.ce_weight * ce + self.hp.review_weight * self.warmup(epoch) * hcl
        return {"total": total, "ce": ce.detach(), "review": hcl.detach()}
