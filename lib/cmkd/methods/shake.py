"""SHAKE (Li & Jin, NeurIPS 2022, "Shadow Knowledge Distillation: Bridging Offline and Online
Knowledge Transfer"): a shadow head on the frozen teacher's features, trained online next to the
student, mediates the distillation.

The objective is :func:`cmkd.distill.shake_loss` with the official code's settings (lliai/SHAKE,
``--distill shake -r 1 -a 0 -b 1 --kd_T 4``): every logit tensor layer-normalised times 3.1415;
``CE(student) + 0 * KD(student <- teacher) + 1 * [KD(student <- shadow) + KD(shadow <- student)
+ CE(shadow) + MSE(shadow, teacher)]`` at temperature 4.  The teacher stays frozen; the shadow
head (``extra['shadow']``) is the method's state across steps and trains with the student.

The shadow head: :class:`cmkd.models.proxy.ProxyHead` (C2KD's proxy structure, GAP -> 1x1 conv ->
BN -> LeakyReLU(0.1) -> linear, which C2KD says follows SHAKE's) on one teacher layer, by
name; 'auto' is the teacher's second-to-last feature map (a ResNet's layer3, where C2KD's
official code puts its proxies), its only map if it has one, else 'pooled'.  Departure: the
official head fuses the teacher's three CIFAR-ResNet stages by strided convolutions and ends in
the teacher's own (fixed) classifier; C2KD's reproduction of SHAKE, the one Table 3 reports,
is not public.  With ``runs=True`` the head is the proxy head's stacked form
(``cmkd.models.stacked``) on the stacked teacher's 'pooled' features, seeded by
``run_seeds()``.

Segmentation (a dense teacher, :mod:`cmkd.models.deeplab`): the shadow head is per pixel
(:class:`cmkd.models.proxy.DenseProxyHead`, on the teacher's 'decoder' map by default), its logits
upsampled to the labels, and every term is taken over the labelled pixels of the batch
(:mod:`cmkd.distill.dense`).

Diagnostic (C2KD Fig. 3): ``n_krc_below_omega``, the samples of the batch whose Kendall tau
between the shadow head's and the student's logits (the pair SHAKE distils both ways) is below
``omega``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cmkd import models
from cmkd.distill import shake_loss
from cmkd.distill.shake import OFFICIAL_SCALE
from cmkd.methods.base import Method, register
from cmkd.methods.layers import (
    AUTO,
    check_layer,
    dense_head_logits,
    feature_shapes,
    is_dense_model,
    map_layers,
)
from cmkd.metrics.krc import kendall_tau
from cmkd.params import spec


def shadow_layer(shapes) -> str:
    """The default shadow-head layer: the second-to-last map, the only map, or 'pooled'."""
    maps = map_layers(shapes)
    return maps[-2] if len(maps) >= 2 else maps[0] if maps else "pooled"


@register
class SHAKE(Method):
    """Shadow-head KD from a frozen teacher; the head in ``extra['shadow']``."""

    name = "shake"

    @dataclass(frozen=True)
    class Hparams:
        teacher_layer: str = field(default=AUTO, metadata=spec(
            "teacher feature the shadow head reads, by name ('auto': the second-to-last map)"))
        temperature: float = field(default=4.0, metadata=spec(
            "KD temperature (official --kd_T 4)", low=0, high=100, low_open=True))
        ce_weight: float = field(default=1.0, metadata=spec(
            "weight of the student's cross entropy (official -r 1)", low=0))
        alpha: float = field(default=0.0, metadata=spec(
            "weight of the student's direct KD from the teacher (official -a 0)", low=0))
        beta: float = field(default=1.0, metadata=spec(
            "weight of the shadow terms (official -b 1)", low=0))
        layer_norm: bool = field(default=True, metadata=spec(
            "layer-normalise every logit tensor over the classes (official: yes)"))
        scale: float = field(default=OFFICIAL_SCALE, metadata=spec(
            "factor on the layer-normalised logits (official 3.1415)", low=0, low_open=True))
        omega: float = field(default=0.0, metadata=spec(
            "KRC threshold of the n_krc_below_omega diagnostic (C2KD Fig. 3: 0)", low=-1,
            high=1))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        shapes = feature_shapes(self.teacher, "teacher", self.name)
        self.dense = is_dense_model(self.teacher)
        auto = "decoder" if self.dense else shadow_layer(shapes)
        layer = auto if self.hp.teacher_layer == AUTO else self.hp.teacher_layer
        self.layer = check_layer(layer, shapes, param="teacher_layer", method=self.name,
                                 role="teacher")
        width = shapes[self.layer][0]
        if self.dense:
            self.extra["shadow"] = models.build("dense_proxy_head", in_channels=width,
                                                classes=self.classes)
        elif self.runs:
            self.extra["shadow"] = models.stacked("proxy_head", self.run_seeds(),
                                                  in_channels=width, classes=self.classes)
        else:
            self.extra["shadow"] = models.build("proxy_head", in_channels=width,
                                                classes=self.classes)

    def step(self, batch, epoch):
        logits, _ = self.student_forward(batch, features=True)
        teacher, ft = self.teacher_forward(batch, features=True)
        y = batch["label"]
        if self.dense:
            shadow = dense_head_logits(self.extra["shadow"], ft[self.layer], y.shape[-2:])
        else:
            shadow = self.extra["shadow"](ft[self.layer])
        logits, teacher, shadow, y = self.samples(y, logits, teacher, shadow)
        hp = self.hp
        terms = shake_loss(logits, teacher, y, shadow=shadow,
                           temperature=hp.temperature, ce_weight=hp.ce_weight, alpha=hp.alpha,
                           beta=hp.beta, layer_norm=hp.layer_norm, scale=hp.scale,
                           runs=self.runs)
        out = {k: (v if k == "total" else v.detach()) for k, v in terms.items()}
        tau = kendall_tau(shadow.detach().float(), logits.detach().float(), "a")
        out["n_krc_below_omega"] = (tau < hp.omega).sum(-1).float()
        return out
