"""FitNet (Romero et al., ICLR 2015, "FitNets: Hints for Thin Deep Nets"): hint regression from
student layers to teacher layers, ``ce_weight * CE(s, y) + feat_weight * sum_l MSE(r_l(s_l), t_l)``.

As mdistiller (megvii-research) trains it, not the paper's two stages: one joint stage, the
hint term weighted 100 (``CFG.FITNET.LOSS.FEAT_WEIGHT``), the hint layer in the middle of the
network (mdistiller's ``HINT_LAYER = 2``: a ResNet's layer2 output).  Layers are chosen by name
(the models' ``feature_shapes``); 'auto' picks the middle feature of each model
(:func:`cmkd.methods.layers.middle_layer`), and 'pooled' on both sides when the two middle
layers are not both maps or both vectors.

Departures, for crossmodal pairs: the regressor is :func:`cmkd.models.auxiliary.hint_regressor` (a
linear map for vectors, 1x1 conv + BN for maps; mdistiller's ConvReg also fits the spatial size
by its kernel and adds a ReLU), and when the two maps differ in spatial size (different inputs,
e.g. a spectrogram and a frame) the teacher's map is adaptively average-pooled to the student's
size (:func:`cmkd.methods.layers.match_spatial`).  The regressors map the student's channels to
the teacher's, so the architectures may differ.

With ``runs=True`` (stacked MLPs, notebook 08) the regressor is a
:class:`cmkd.models.batched.BatchedLinear` seeded by ``run_seeds(i)`` (the method's seeds,
shifted by i for the i-th layer pair) and the features are vectors (a stacked MLP's 'pooled',
its last hidden layer); notebook 08 sets ``feat_weight`` 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from cmkd.distill import fitnet_loss
from cmkd.methods.base import Method, register
from cmkd.methods.layers import (
    AUTO,
    check_layer,
    feature_shapes,
    is_map,
    match_spatial,
    middle_layer,
    resolve_pairs,
)
from cmkd.models.auxiliary import hint_regressor
from cmkd.models.batched import BatchedLinear
from cmkd.params import ParamError, spec


@register
class FitNet(Method):
    """Hint regression from a frozen teacher's layers; regressors in ``extra['regressors']``."""

    name = "fitnet"

    @dataclass(frozen=True)
    class Hparams:
        student_layers: list[str] = field(default_factory=lambda: [AUTO], metadata=spec(
            "student features guided by the hints, by name ('auto': the middle layer)",
            min_items=1, unique=False))
        teacher_layers: list[str] = field(default_factory=lambda: [AUTO], metadata=spec(
            "teacher features giving the hints, one per student layer ('auto': the middle "
            "layer)", min_items=1, unique=False))
        ce_weight: float = field(default=1.0, metadata=spec(
            "weight of the cross entropy on labels", low=0))
        feat_weight: float = field(default=100.0, metadata=spec(
            "weight of the hint loss (mdistiller: 100; notebook 08: 1)", low=0))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        s_shapes = feature_shapes(self.student, "student", self.name)
        t_shapes = feature_shapes(self.teacher, "teacher", self.name)
        self.layers = self._layers(s_shapes, t_shapes)
        regressors = nn.ModuleList()
        for i, (s, t) in enumerate(self.layers):
            s_shape, t_shape = s_shapes[s], t_shapes[t]
            if is_map(s_shape) != is_map(t_shape):
                kinds = {True: "a (channels, H, W) map", False: "a (dim,) vector"}
                raise ParamError("teacher_layers", f"student layer {s!r} is "
                                 f"{kinds[is_map(s_shape)]} but teacher layer {t!r} is "
                                 f"{kinds[is_map(t_shape)]}; pair maps with maps and vectors "
                                 f"with vectors (e.g. 'pooled' with 'pooled')",
                                 f"method {self.name!r}")
            if self.runs:
                if is_map(s_shape):
                    raise ValueError(f"method {self.name!r} with runs=True takes vector "
                                     f"features only, got the map {s!r}")
                regressors.append(BatchedLinear(s_shape[0], t_shape[0], self.run_seeds(i)))
            else:
                regressors.append(hint_regressor(s_shape[0], t_shape[0],
                                                 spatial=is_map(s_shape)))
        self.extra["regressors"] = regressors

    def _layers(self, s_shapes, t_shapes) -> list[tuple[str, str]]:
        pairs = resolve_pairs(self.hp.student_layers, self.hp.teacher_layers, method=self.name)
        out = []
        for s, t in pairs:
            both_auto = s == AUTO and t == AUTO
            s = middle_layer(s_shapes) if s == AUTO else s
            t = middle_layer(t_shapes) if t == AUTO else t
            check_layer(s, s_shapes, param="student_layers", method=self.name, role="student")
            check_layer(t, t_shapes, param="teacher_layers", method=self.name, role="teacher")
            if both_auto and is_map(s_shapes[s]) != is_map(t_shapes[t]):
                s, t = "pooled", "pooled"
            out.append((s, t))
        return out

    def hint_terms(self, student_features, teacher_features):
        """The hint losses of every layer pair, summed: () or (runs,)."""
        total = 0
        for (s, t), reg in zip(self.layers, self.extra["regressors"]):
            fs = student_features[s]
            ft = match_spatial(teacher_features[t], fs)
            total = total + fitnet_loss(fs, ft, regressor=reg, runs=self.runs)
        return total

    def step(self, batch, epoch):
        logits, fs = self.student_forward(batch, features=True)
        _, ft = self.teacher_forward(batch, features=True)
        ce = self.supervised_loss(logits, batch["label"])
        hint = self.hint_terms(fs, ft)
        total = self.hp.ce_weight * ce + self.hp.feat_weight * hint
        return {"total": total, "ce": ce.detach(), "fitnet": hint.detach()}
