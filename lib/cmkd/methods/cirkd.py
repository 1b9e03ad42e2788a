"""CIRKD (Yang et al., CVPR 2022): cross-image relational KD for segmentation, C2KD Table 4's
segmentation baseline.

``CE(s, y) + kd_weight * KD(s <- t) + lambda_batch * L_batch-p2p + lambda_pixel * L_mem-p2p
+ lambda_region * L_mem-p2r`` (:mod:`cmkd.distill.cirkd`): per-pixel KD at temperature 1 over the
labelled pixels, the mini-batch pixel-to-pixel relations between every pair of images, and the
relations of each labelled pixel to two banks of teacher embeddings from earlier batches (pixels
and class regions).  The defaults are the official training script's (winycg/CIRKD:
``--lambda-kd 1 --lambda-minibatch-pixel 1 --lambda-memory-pixel 0.1 --lambda-memory-region
0.1``, contrast temperature 0.1, contrast KD temperature 1, banks of 20000 pixels and 2000
regions).

The relations are read on one feature map of each network (``feature``, default 'layer4', the
encoder's last stage, the map CIRKD reads); the student's is projected to the teacher's width for
the bank terms by a 1x1 conv -> BN -> ReLU -> 1x1 conv head (``extra['project']``, trained with
the student).  Labels are taken at the map's size by nearest sampling.  Each step enqueues, per
image, up to ``enqueue_pixels`` random labelled teacher pixels and every class region (first in,
first out); the banks are the method's state across steps, empty at the start (their terms are
0 until a batch has been seen).  Departure: the official code samples a class-balanced subset of
the banks per step; here every entry is an anchor (the banks are sized for that).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from cmkd.distill import kd_loss
from cmkd.distill.cirkd import (
    anchor_relation_loss,
    labels_at,
    minibatch_pixel_loss,
    region_embeddings,
)
from cmkd.methods.base import Method, model_feature_shapes, register, resolve_feature
from cmkd.methods.layers import is_dense_model
from cmkd.metrics.task import IGNORE_INDEX
from cmkd.params import spec


@register
class CIRKD(Method):
    """Cross-image relational KD from a frozen segmentation teacher."""

    name = "cirkd"

    @dataclass(frozen=True)
    class Hparams:
        feature: str = field(default="layer4", metadata=spec(
            "the feature map both networks' relations are read on"))
        kd_weight: float = field(default=1.0, metadata=spec("weight of the pixel KD", low=0))
        kd_temperature: float = field(default=1.0, metadata=spec(
            "temperature of the pixel KD", low=0, high=100, low_open=True))
        lambda_batch: float = field(default=1.0, metadata=spec(
            "weight of the mini-batch pixel-to-pixel relations", low=0))
        lambda_pixel: float = field(default=0.1, metadata=spec(
            "weight of the pixel-bank relations", low=0))
        lambda_region: float = field(default=0.1, metadata=spec(
            "weight of the region-bank relations", low=0))
        temperature: float = field(default=0.1, metadata=spec(
            "temperature of the similarities (contrast temperature)", low=0, high=100,
            low_open=True))
        relation_temperature: float = field(default=1.0, metadata=spec(
            "KD temperature of the bank relations", low=0, high=100, low_open=True))
        pixel_memory: int = field(default=20000, metadata=spec(
            "teacher pixel embeddings kept in the bank", low=0))
        region_memory: int = field(default=2000, metadata=spec(
            "teacher region embeddings kept in the bank", low=0))
        enqueue_pixels: int = field(default=10, metadata=spec(
            "labelled teacher pixels enqueued per image and step", low=0))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.runs:
            raise ValueError("method 'cirkd' trains one segmentation run at a time (runs=False)")
        if not (is_dense_model(self.student) and is_dense_model(self.teacher)):
            raise ValueError("method 'cirkd' is for segmentation networks (per-pixel logits, "
                             "e.g. deeplabv3plus_resnet18) on both sides")
        names = [resolve_feature(m, self.hp.feature, role, self.name)
                 for m, role in ((self.student, "student"), (self.teacher, "teacher"))]
        self.features = tuple(names)
        s_dim = model_feature_shapes(self.student)[names[0]][0]
        t_dim = model_feature_shapes(self.teacher)[names[1]][0]
        self.extra["project"] = nn.Sequential(
            nn.Conv2d(s_dim, t_dim, 1, bias=False), nn.BatchNorm2d(t_dim), nn.ReLU(inplace=True),
            nn.Conv2d(t_dim, t_dim, 1, bias=False))
        self.pixel_bank = torch.zeros(0, t_dim)
        self.region_bank = torch.zeros(0, t_dim)

    def _enqueue(self, bank: torch.Tensor, new: torch.Tensor, size: int) -> torch.Tensor:
        new = new.detach().float()
        bank = bank.to(new.device)
        return torch.cat([new, bank])[:size]

    def step(self, batch, epoch):
        y = batch["label"]
        hp = self.hp
        student, s_feats = self.student_forward(batch, features=True)
        teacher, t_feats = self.teacher_forward(batch, features=True)
        ce = self.supervised_loss(student, y)
        s_rows, t_rows, _ = self.samples(y, student, teacher)
        kd = kd_loss(s_rows, t_rows, temperature=hp.kd_temperature)
        fs, ft = s_feats[self.features[0]], t_feats[self.features[1]].detach()
        if fs.shape[2:] != ft.shape[2:]:
            raise ValueError(f"method 'cirkd': the student's {self.features[0]!r} map "
                             f"{tuple(fs.shape)} and the teacher's {self.features[1]!r} map "
                             f"{tuple(ft.shape)} must have the same spatial size")
        batch_rel = minibatch_pixel_loss(fs, ft, temperature=hp.temperature)
        proj = self.extra["project"](fs)
        yf = labels_at(y, fs.shape[2:])
        labelled = (yf != IGNORE_INDEX).flatten()
        s_pix = proj.permute(0, 2, 3, 1).reshape(-1, proj.shape[1])[labelled]
        t_pix = ft.permute(0, 2, 3, 1).reshape(-1, ft.shape[1])[labelled]
        zero = ce.new_zeros(())
        pixel_rel = region_rel = zero
        if len(self.pixel_bank) and hp.lambda_pixel > 0 and len(s_pix):
            pixel_rel = anchor_relation_loss(s_pix, t_pix, self.pixel_bank.to(s_pix.device),
                                             temperature=hp.temperature,
                                             kd_temperature=hp.relation_temperature)
        if len(self.region_bank) and hp.lambda_region > 0 and len(s_pix):
            region_rel = anchor_relation_loss(s_pix, t_pix, self.region_bank.to(s_pix.device),
                                              temperature=hp.temperature,
                                              kd_temperature=hp.relation_temperature)
        with torch.no_grad():
            if hp.pixel_memory and hp.enqueue_pixels:
                picks = []
                per_image = yf.flatten(1) != IGNORE_INDEX
                flat = ft.flatten(2).transpose(1, 2)
                for b in range(ft.shape[0]):
                    idx = per_image[b].nonzero().flatten()
                    idx = idx[torch.randperm(len(idx), device=idx.device)[:hp.enqueue_pixels]]
                    picks.append(flat[b, idx])
                self.pixel_bank = self._enqueue(self.pixel_bank, torch.cat(picks),
                                                hp.pixel_memory)
            if hp.region_memory:
                self.region_bank = self._enqueue(
                    self.region_bank, region_embeddings(ft, yf, self.classes), hp.region_memory)
        total = (ce + hp.kd_weight * kd + hp.lambda_batch * batch_rel
                 + hp.lambda_pixel * pixel_rel + hp.lambda_region * region_rel)
        return {"total": total, "ce": ce.detach(), "kd": kd.detach(),
                "batch_relation": batch_rel.detach(), "pixel_relation": pixel_rel.detach(),
                "region_relation": region_rel.detach()}
