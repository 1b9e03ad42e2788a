"""Task metrics (accuracy, F1, mAP, mIoU) through torchmetrics, and the task a target implies.

Nothing here computes a metric by hand: each name maps to a torchmetrics class, chosen by the
task the logits and targets imply (:func:`infer_task`):

- 'multiclass': logits (batch, classes), target (batch,) int64;
- 'multilabel': logits (batch, labels), target (batch, labels) float in {0, 1} (MM-IMDB genres);
- 'segmentation': logits (batch, classes, H, W), target (batch, H, W) int64 with the void label
  :data:`IGNORE_INDEX` (255, NYU Depth V2) ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

# torchmetrics is imported where a metric collection is built: importing it costs more than
# torch itself (it pulls in torchvision), and processes that never build one (the command line,
# workers that only count the accuracies of stacked runs) should not pay for it.
if TYPE_CHECKING:
    import torchmetrics

#: The void label of the segmentation datasets (cmkd.data.nyudv2), ignored by losses and metrics.
IGNORE_INDEX = 255

TASKS = ("multiclass", "multilabel", "segmentation")

#: Metric names; all of them are 'higher is better'.
METRICS = ("accuracy", "f1_macro", "f1_micro", "map", "miou")


def infer_task(logits: torch.Tensor, target: torch.Tensor) -> str:
    """The task implied by a batch: 'multiclass', 'multilabel' or 'segmentation'.

    Raises ValueError naming both shapes when they fit none of the three layouts.
    """
    if target.is_floating_point():
        if target.shape == logits.shape and logits.dim() == 2:
            return "multilabel"
    elif logits.dim() == 2 and target.dim() == 1 and target.shape[0] == logits.shape[0]:
        return "multiclass"
    elif (logits.dim() >= 3 and target.dim() == logits.dim() - 1
          and target.shape[0] == logits.shape[0] and target.shape[1:] == logits.shape[2:]):
        return "segmentation"
    raise ValueError(
        f"cannot tell the task from logits {tuple(logits.shape)} and target "
        f"{tuple(target.shape)} ({target.dtype}); expected logits (batch, classes) with an int64 "
        f"target (batch,), logits (batch, labels) with a float target (batch, labels), or "
        f"logits (batch, classes, H, W) with an int64 target (batch, H, W)")


def task_metrics(names: Sequence[str], classes: int, task: str
                 ) -> torchmetrics.MetricCollection:
    """A torchmetrics collection computing ``names`` for ``task`` over ``classes`` classes.

    accuracy : MulticlassAccuracy, micro (the fraction of correct samples, or of labelled pixels)
        / MultilabelAccuracy, micro.
    f1_macro, f1_micro : MulticlassF1Score / MultilabelF1Score.
    map : mean average precision over classes (MultilabelAveragePrecision, macro; multiclass:
        one-vs-rest MulticlassAveragePrecision, macro).
    miou : mean intersection over union (MulticlassJaccardIndex, macro) - segmentation or
        multiclass only.
    """
    import torchmetrics
    from torchmetrics import classification as tmc

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ValueError(f"metrics must be a non-empty list of {METRICS}, got {list(names)!r}")
    if task == "multilabel":
        if "miou" in names:
            raise ValueError("metric 'miou' is for segmentation / multiclass targets, not "
                             "multilabel ones; use 'map' or 'f1_macro'")
        kw = {"num_labels": classes}
        table = {"accuracy": (tmc.MultilabelAccuracy, "micro"),
                 "f1_macro": (tmc.MultilabelF1Score, "macro"),
                 "f1_micro": (tmc.MultilabelF1Score, "micro"),
                 "map": (tmc.MultilabelAveragePrecision, "macro")}
    else:
        kw = {"num_classes": classes,
              "ignore_index": IGNORE_INDEX if task == "segmentation" else None}
        table = {"accuracy": (tmc.MulticlassAccuracy, "micro"),
                 "f1_macro": (tmc.MulticlassF1Score, "macro"),
                 "f1_micro": (tmc.MulticlassF1Score, "micro"),
                 "map": (tmc.MulticlassAveragePrecision, "macro"),
                 "miou": (tmc.MulticlassJaccardIndex, "macro")}
    return torchmetrics.MetricCollection(
        {name: table[name][0](average=table[name][1], **kw) for name in names})


class StackScores:
    """Task metrics of R stacked runs over a pass: logits (R, batch, classes) and targets
    (R, batch), one value per run and metric.

    The multiclass top-1 accuracy, the one metric the stacked small-model runs report, is
    counted for every run at once (correct / seen: what ``MulticlassAccuracy(average='micro')``
    computes, a test checks it run by run); any other metric, or another task, goes through one
    torchmetrics collection per run (:func:`task_metrics`).
    """

    def __init__(self, names: Sequence[str], classes: int, runs: int,
                 device: torch.device | str = "cpu"):
        self.names, self.classes, self.runs = tuple(names), classes, runs
        self.device = torch.device(device)
        self.correct: torch.Tensor | None = None
        self.seen = 0
        self.per_run: list[torchmetrics.MetricCollection] | None = None

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if logits.dim() < 3 or logits.shape[0] != self.runs or target.shape[0] != self.runs:
            raise ValueError(f"expected logits (runs={self.runs}, batch, ...) and target "
                             f"(runs, batch, ...), got {tuple(logits.shape)} and "
                             f"{tuple(target.shape)}")
        task = infer_task(logits[0], target[0])
        if self.names == ("accuracy",) and task == "multiclass":
            hit = (logits.argmax(-1) == target).sum(-1)
            self.correct = hit if self.correct is None else self.correct + hit
            self.seen += target.shape[1]
            return
        if self.per_run is None:
            self.per_run = [task_metrics(self.names, self.classes, task).to(self.device)
                            for _ in range(self.runs)]
        target = target.long() if not target.is_floating_point() else target.int()
        for r, metric in enumerate(self.per_run):
            metric.update(logits[r].float(), target[r])

    def compute(self) -> list[dict[str, float]]:
        """One ``{metric: value}`` per run (NaN before any update)."""
        if self.correct is not None:
            acc = (self.correct.double() / self.seen).tolist()
            return [{"accuracy": a} for a in acc]
        if self.per_run is None:
            return [{n: float("nan") for n in self.names} for _ in range(self.runs)]
        return [{k: float(v) for k, v in m.compute().items()} for m in self.per_run]
