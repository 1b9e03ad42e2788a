"""Distillation losses as pure functions on logits."""
from cmkd.distill.kd import kd_loss

__all__ = ["kd_loss"]
