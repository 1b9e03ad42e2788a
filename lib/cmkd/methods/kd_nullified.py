"""KD from a teacher with some channels of one layer nullified (MFH Sec. 5.4, Appendix B.4).

MFH derives teachers of different gamma from one trained teacher by zeroing r% of the channels
of a feature layer during distillation: the least salient ones by Algorithm 1 (a
modality-general teacher), the most salient (modality-specific) or random ones.  The loss is
KD's (:mod:`cmkd.methods.kd`: ``ce_weight * CE + kd_weight * T^2 KL``; MFH Eq. 1 with
rho = ce_weight); only the teacher's forward changes (:func:`cmkd.mfh.nullified_logits`).  The
kept channels are a hyperparameter, so every derived teacher is its own cached job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cmkd.methods.base import register
from cmkd.methods.kd import KD
from cmkd.params import spec


@register
class KDNullified(KD):
    """KD from a frozen teacher whose feature ``layer`` keeps only the channels ``keep``."""

    name = "kd_nullified"

    @dataclass(frozen=True)
    class Hparams(KD.Hparams):
        layer: str = field(default="pooled", metadata=spec(
            "the teacher's feature whose channels are nullified (a name of its "
            "feature_shapes; 'pooled': the classifier's input)"))
        keep: list[int] = field(default_factory=lambda: [0], metadata=spec(
            "the teacher's channels kept (the others are set to zero)", low=0, min_items=1))

    def __init__(self, hp=None, **kw):
        super().__init__(hp, **kw)
        if self.runs:
            raise ValueError("method 'kd_nullified' trains one run at a time (runs=False)")
        shapes = getattr(self.teacher, "feature_shapes", None) or {}
        if self.hp.layer not in shapes:
            raise ValueError(f"method 'kd_nullified': layer must be one of the teacher's "
                             f"features {list(shapes)}, got {self.hp.layer!r}")
        channels = shapes[self.hp.layer][0]
        if max(self.hp.keep) >= channels:
            raise ValueError(f"method 'kd_nullified': keep names channel {max(self.hp.keep)} "
                             f"but the teacher's {self.hp.layer!r} has {channels} channels")

    def teacher_forward(self, batch, features: bool = False):
        if features:
            raise ValueError("method 'kd_nullified' gives the teacher's logits only")
        import torch

        from cmkd.mfh import nullified_logits

        x = self.inputs(batch, self.teacher_inputs)
        with torch.no_grad():
            return nullified_logits(self.teacher, x, self.hp.layer, self.hp.keep)
