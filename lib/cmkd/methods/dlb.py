"""DLB: self-distillation from the last mini-batch (Shen et al., CVPR 2022; C2KD Table 6).

No teacher: the student's own logits for the samples it saw at the previous iteration are the
soft targets of this one, ``ce_weight * CE + alpha * T^2 KL(p_last^T || p_now^T)``
(:func:`cmkd.distill.dlb_loss`; T = 3, alpha = 1 as the paper).

Batches must come in DLB's order (:func:`dlb_batches`, :class:`DLBBatchSampler` for
a DataLoader): each batch after the first of an epoch starts with the samples that ended the
previous one.  State: the detached logits of the previous batch's last part (the rows that the
next batch repeats: all of batch 0, the second half of the others).  At a step with stored logits
of n rows, the first n rows of the batch are distilled towards them; a new epoch starts without
them.  A batch carrying an 'index' key (dataset indices) is checked: its first n indices must be
the stored ones, or the step refuses the batch (a loader that does not pair batches).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import Sampler

from cmkd.distill import dlb_loss
from cmkd.methods.base import Method, register
from cmkd.params import spec


def dlb_batches(n: int, batch_size: int, generator: torch.Generator | None = None
                ) -> list[torch.Tensor]:
    """Index batches of one epoch in DLB's order.

    ``n`` samples are shuffled into halves ``h_0, h_1, ...`` of ``batch_size // 2``; batch k is
    ``cat(h_{k-1}, h_k)`` (batch 0 is ``h_0``), so the first half of each batch after the first
    repeats the second half of the previous one.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2, got {batch_size}")
    half = batch_size // 2
    halves = list(torch.randperm(n, generator=generator).split(half))
    return [halves[0]] + [torch.cat((halves[k - 1], halves[k])) for k in range(1, len(halves))]


class DLBBatchSampler(Sampler):
    """A DataLoader ``batch_sampler`` yielding :func:`dlb_batches` of ``n`` samples,
    reshuffled every epoch from ``generator`` (default: seeded with ``seed``)."""

    def __init__(self, n: int, batch_size: int, seed: int = 0,
                 generator: torch.Generator | None = None):
        self.n, self.batch_size = n, batch_size
        self.generator = generator or torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[list[int]]:
        for b in dlb_batches(self.n, self.batch_size, self.generator):
            yield b.tolist()

    def __len__(self) -> int:
        half = self.batch_size // 2
        return -(-self.n // half)


@register
class DLB(Method):
    """Self-distillation from the last mini-batch (no teacher)."""

    name = "dlb"
    needs_teacher = False

    @dataclass(frozen=True)
    class Hparams:
        temperature: float = field(default=3.0, metadata=spec(
            "softening temperature T", low=0, high=100, low_open=True))
        alpha: float = field(default=1.0, metadata=spec("weight of the consistency term",
                                                        low=0))
        ce_weight: float = field(default=1.0, metadata=spec(
            "weight of the cross entropy on labels", low=0))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reset()

    def train_batch_sampler(self, n: int, batch_size: int, seed: int) -> DLBBatchSampler:
        """DLB's batches: each repeats the last half of the previous one."""
        return DLBBatchSampler(n, batch_size, seed=seed)

    def reset(self) -> None:
        """Forget the previous batch (a new epoch, or a new training)."""
        self.previous: torch.Tensor | None = None
        self.previous_index: torch.Tensor | None = None
        self.epoch: int | None = None

    def step(self, batch, epoch):
        if epoch != self.epoch:
            self.reset()
            self.epoch = epoch
        logits = self.student_forward(batch)
        y = batch["label"]
        ce = self.supervised_loss(logits, y)
        n = 0 if self.previous is None else self.previous.shape[-2]
        index = batch.get("index")
        if n:
            if logits.shape[-2] <= n:
                raise ValueError(f"DLB: a batch of {logits.shape[-2]} rows cannot repeat the "
                                 f"previous batch's last {n}; use DLBBatchSampler / "
                                 f"dlb_batches")
            if index is not None and not torch.equal(index[..., :n], self.previous_index):
                raise ValueError("DLB: this batch does not start with the samples that ended the "
                                 "previous one; use DLBBatchSampler / dlb_batches")
            dlb = dlb_loss(logits[..., :n, :], self.previous, temperature=self.hp.temperature,
                           runs=self.runs)
        else:
            dlb = torch.zeros_like(ce)
        self.previous = logits[..., n:, :].detach()
        self.previous_index = None if index is None else index[..., n:].clone()
        total = self.hp.ce_weight * ce + self.hp.alpha * dlb
        return {"total": total, "ce": ce.detach(), "dlb": dlb.detach()}
