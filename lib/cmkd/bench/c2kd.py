"""Benchmark: one C2KD training step against one bidirectional-KD step, through the registry.

The question (issue 11, Speed): do C2KD's own modules - the dual proxies, the KRC filter and the
non-target KL - cost at most 10% over a bidirectional KD step on the same models?  Every step is
driven as :func:`cmkd.engine.fit` drives it: a method from :func:`cmkd.methods.build`, an SGD
optimiser (momentum 0.9, :func:`cmkd.engine.make_optimizer`) over ``method.parameters()``,
``method.train()``, then per step ``method.step(batch, 0)`` (under bf16 autocast when ``amp``,
the engine's default on CUDA), ``zero_grad``, ``['total'].backward()``, ``opt.step()`` and the
engine's per-term sums.  Left out, being the same for every method: the batch's host-to-device
copy (the batch stays on the device) and the running train accuracy.

Variants, each on the same teacher / student pair:

* ``kd``: the registry's KD (teacher frozen, no gradient through it);
* ``bd``: preset ``c2kd_bd`` (BD only: both models train on CE and the two-way KL of their
  logits; no proxy, no filter, all classes) - the baseline of the 10% target;
* ``c2kd_partial``: preset ``c2kd_partial`` (the teacher's top 2 blocks updated; Table 3's
  Ours-dagger);
* ``c2kd``: method ``c2kd`` (proxies, KRC filter, non-target KL, teacher fully updated;
  Table 3's Ours-double-dagger);
* ``official_filter``: the same C2KD step with the filter computed the official code's way
  (:func:`official_filter_scores`: the proxy logits copied to the host every step, then
  ``scipy.stats.kendalltau`` once per sample in a Python loop), patched in for that step only.

Pairs: on the CPU the small CNNs of the embedded AV-digits data (teacher audio 1 x 32 x 32,
student image 1 x 8 x 8, batch 64, 10 classes) and ResNet-18s at a small size (a 1-channel
32 x 32 spectrogram teacher, a 1-frame 3 x 32 x 32 visual student, batch 32, AVE's 28 classes:
small, so each step takes a fraction of a second and C2KD's modules weigh relatively more);
with ``device='cuda'`` ResNet-18s at the official code's AVE sizes (spectrogram 1 x 257 x 1024,
frame 3 x 224 x 224, batch 64).  Timed with one torch thread on the CPU, round-robin
(:func:`cmkd.bench.best_seconds_interleaved`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

import cmkd.distill.c2kd as c2kd_losses
from cmkd import methods, models
from cmkd.bench import best_seconds_interleaved, device_label
from cmkd.engine import OptimConfig, make_optimizer
from cmkd.runtime import torch_threads

#: C2KD's own modules may cost at most this fraction over the bidirectional-KD step.
TARGET = 0.10


@dataclass(frozen=True)
class Pair:
    """A teacher / student pair of registry model ``model`` and its random batch."""

    name: str
    model: str
    classes: int
    batch: int
    teacher: tuple[str, tuple[int, ...]]  # (modality, input shape without the batch)
    student: tuple[str, tuple[int, ...]]
    rounds: int  # timed rounds
    inner: int  # steps per timing

    @property
    def label(self) -> str:
        (tm, ts), (sm, ss) = self.teacher, self.student
        return (f"{self.name}: {tm} {_size(ts)} -> {sm} {_size(ss)}, batch {self.batch}, "
                f"{self.classes} classes")

    def build(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        if self.model == "avdigits_cnn":
            return (models.build("avdigits_cnn", modality=self.teacher[0], classes=self.classes),
                    models.build("avdigits_cnn", modality=self.student[0], classes=self.classes))
        sides = []
        for modality, shape in (self.teacher, self.student):
            sides.append(models.build(self.model, classes=self.classes, in_channels=shape[0],
                                      modality=modality))
        return sides[0], sides[1]


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


CPU_PAIRS = (
    Pair("AV-digits small CNNs", "avdigits_cnn", 10, 64,
         ("audio", (1, 32, 32)), ("image", (1, 8, 8)), rounds=40, inner=5),
    Pair("ResNet-18 x 2", "resnet18", 28, 32,
         ("audio", (1, 32, 32)), ("visual", (3, 32, 32)), rounds=30, inner=1),
)
CUDA_PAIRS = (
    Pair("ResNet-18 x 2, AVE sizes", "resnet18", 28, 64,
         ("audio", (1, 257, 1024)), ("visual", (3, 224, 224)), rounds=15, inner=5),
)

#: variant -> (method or preset, label, filter the official code's way)
VARIANTS = {
    "kd": ("kd", "KD step (registry 'kd', teacher frozen)", False),
    "bd": ("c2kd_bd", "bidirectional KD step (preset 'c2kd_bd': BD only, teacher fully updated)",
           False),
    "c2kd_partial": ("c2kd_partial", "C2KD step, teacher's top 2 blocks updated "
                                     "(preset 'c2kd_partial')", False),
    "c2kd": ("c2kd", "C2KD step (method 'c2kd': proxies, KRC filter, non-target KL; teacher "
                     "fully updated)", False),
    "official_filter": ("c2kd", "the same C2KD step, filter the official code's way (logits to "
                                "the host, scipy.stats.kendalltau per sample)", True),
}


# ----------------------------------------------------------------------------- the official way
@torch.no_grad()
def official_filter_scores(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                           kind: str = "krc", target: torch.Tensor | None = None
                           ) -> torch.Tensor:
    """The KRC filter as the official C2KD code computes it, a stand-in for
    :func:`cmkd.distill.c2kd.filter_scores` (benchmark only).

    Both logit tensors are copied to the host (a device-to-host copy and a synchronisation every
    step), ``scipy.stats.kendalltau`` (tau-b) runs once per sample in a Python loop, and the
    scores go back to the logits' device.  A NaN score fails the mask, as there.  Equal to our
    tau-a when a row has no ties.
    """
    if kind != "krc" or teacher_logits.dim() != 2:
        raise ValueError("the official code's filter is the KRC of (batch, classes) logits")
    t = teacher_logits.detach().float().cpu().numpy()
    s = student_logits.detach().float().cpu().numpy()
    taus = np.array([stats.kendalltau(a, b).statistic for a, b in zip(t, s)], dtype=np.float32)
    return torch.from_numpy(taus).to(teacher_logits.device)


@contextlib.contextmanager
def official_filter() -> Iterator[None]:
    """Within the block, C2KD's filter (:func:`cmkd.distill.c2kd.ofsd_mask`) scores samples with
    :func:`official_filter_scores`; restored on exit."""
    ours = c2kd_losses.filter_scores
    c2kd_losses.filter_scores = official_filter_scores
    try:
        yield
    finally:
        c2kd_losses.filter_scores = ours


# ----------------------------------------------------------------------------- one step
def make_step(pair: Pair, variant: str, device: str = "cpu", amp: bool = False,
              channels_last: bool = False):
    """A function running one training step of ``variant`` on ``pair``, as the engine does."""
    name, _, official = VARIANTS[variant]
    torch.manual_seed(0)
    teacher, student = pair.build()
    method = methods.build(name, student=student, teacher=teacher, classes=pair.classes)
    method.to(device, torch.channels_last if channels_last else None)
    opt = make_optimizer(method.parameters(), OptimConfig())
    method.train()
    g = torch.Generator().manual_seed(1)
    batch = {}
    for modality, shape in (pair.teacher, pair.student):
        x = torch.randn(pair.batch, *shape, generator=g).to(device)
        batch[modality] = (x.contiguous(memory_format=torch.channels_last) if channels_last
                           else x)
    batch["label"] = torch.randint(0, pair.classes, (pair.batch,), generator=g).to(device)
    sums: dict[str, torch.Tensor] = {}
    device_type = torch.device(device).type

    def step() -> None:
        method.last_student_logits = None
        with (official_filter() if official else contextlib.nullcontext()), \
                torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            terms = method.step(batch, 0)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
        for k, v in terms.items():  # the engine's per-epoch sums
            v = v.detach().to(torch.float64)
            sums[k] = sums[k] + v if k in sums else v

    return step


# ----------------------------------------------------------------------------- the table
def run(device: str = "cpu", pairs: Sequence[Pair] | None = None,
        variants: Sequence[str] | None = None, amp: bool | None = None,
        channels_last: bool | None = None, rounds: int | None = None,
        inner: int | None = None) -> list[dict]:
    """Rows: benchmark, models, seconds per step, cost vs BD, cost vs KD, speed-up, check,
    device.

    ``amp`` / ``channels_last`` default to the engine's ('auto': on CUDA only); ``pairs``,
    ``variants``, ``rounds`` and ``inner`` override the defaults (small values for a dry run).
    speed-up: the official-filter step's time over ours (on the ``c2kd`` row).  check: C2KD's
    modules against the 10% target, and the official filter's cost.
    """
    cuda = str(device).startswith("cuda")
    amp = cuda if amp is None else amp
    channels_last = cuda if channels_last is None else channels_last
    pairs = (CUDA_PAIRS if cuda else CPU_PAIRS) if pairs is None else pairs
    variants = list(VARIANTS) if variants is None else list(variants)
    rows = []
    for pair in pairs:
        with torch_threads(1):
            steps = {v: make_step(pair, v, device, amp, channels_last) for v in variants}
            times = best_seconds_interleaved(steps, rounds or pair.rounds, inner or pair.inner,
                                             warmup=2 if cuda else 1, device=device)
        rows += _rows(pair, times, device, amp, channels_last)
    return rows


def _rows(pair: Pair, times: dict[str, float], device: str, amp: bool,
          channels_last: bool) -> list[dict]:
    where = device_label(device) + (", bf16 autocast" if amp else "") + (
        ", channels_last" if channels_last else "")
    nan = float("nan")
    rows = []
    for v, t in times.items():
        check = ""
        if v == "c2kd" and "bd" in times:
            extra = t / times["bd"] - 1
            check = (f"C2KD's modules {extra:+.1%} over BD (target <= {TARGET:.0%}): "
                     + ("met" if extra <= TARGET else "NOT met"))
        if v == "official_filter" and "c2kd" in times:
            check = f"official filter's step / ours: {t / times['c2kd']:.2f}x"
        rows.append({
            "benchmark": VARIANTS[v][1], "models": pair.label, "seconds": t,
            "cost vs BD": t / times["bd"] if "bd" in times else nan,
            "cost vs KD": t / times["kd"] if "kd" in times else nan,
            "speed-up": (times["official_filter"] / t if v == "c2kd" and "official_filter"
                         in times else 1.0 if v == "official_filter" else nan),
            "check": check, "device": where})
    return rows
