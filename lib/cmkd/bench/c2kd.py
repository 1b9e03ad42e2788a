"""Benchmark: one C2KD training step against one plain KD step on the same backbone.

Teacher and student are torchvision ResNet-18s (28 classes, AVE's count) on a batch of 32 random
64 x 64 images, on the CPU.  KD: the fixed teacher's forward pass without gradients, the
student's forward and backward pass, one SGD step.  C2KD: proxies on layer3 (the official code's
place), the full loss of Eq. (6) with the batched KRC filter, and the teacher updated too, fully
(Table 3's Ours-double-dagger) or in its top two layers (layer4 and fc, Ours-dagger).  A
bidirectional-KD step (teacher fully updated, no proxies or filter) shows what updating the
teacher alone costs.  ``device='cuda'`` runs the same steps on the GPU at batch 64 and 112 px
(the official code's batch size; a size that gives the card some work).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torchvision.models import resnet18

from cmkd.bench import device_label
from cmkd.distill import ProxyHead, c2kd_loss, kd_loss, teacher_parameters
from cmkd.train import torch_threads

CLASSES, BATCH, SIZE = 28, 32, 64


def _forward(net, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer3 feature map, logits) of a torchvision ResNet."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    f3 = net.layer3(net.layer2(net.layer1(x)))
    return f3, net.fc(torch.flatten(net.avgpool(net.layer4(f3)), 1))


def _setup(variant: str, device: str = "cpu", batch: int = BATCH, size: int = SIZE):
    torch.manual_seed(0)
    student, teacher = resnet18(num_classes=CLASSES), resnet18(num_classes=CLASSES)
    sp, tp = ProxyHead(256, CLASSES), ProxyHead(256, CLASSES)
    params = list(student.parameters())
    if variant == "kd":
        teacher_parameters(teacher, top_k=1)  # irrelevant: the teacher runs without gradients
        teacher.eval()
    else:
        top = {"c2kd_top2": 2}.get(variant)
        params += teacher_parameters(teacher, top_k=top)
        teacher.train()
        if variant.startswith("c2kd"):
            params += list(sp.parameters()) + list(tp.parameters())
    student.train(), sp.train(), tp.train()
    for m in (student, teacher, sp, tp):
        m.to(device)
    opt = torch.optim.SGD(params, lr=1e-2, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(batch, 3, size, size, generator=g).to(device)
    xt = torch.randn(batch, 3, size, size, generator=g).to(device)
    y = torch.randint(0, CLASSES, (batch,), generator=g).to(device)

    def step():
        fs, zs = _forward(student, xs)
        if variant == "kd":
            with torch.no_grad():
                _, zt = _forward(teacher, xt)
            loss = F.cross_entropy(zs, y) + kd_loss(zs, zt)
        else:
            ft, zt = _forward(teacher, xt)
            if variant == "bd":
                loss = c2kd_loss(zs, zt, y, ofs=False, nt=False)["total"]
            else:
                loss = c2kd_loss(zs, zt, y, student_proxy=sp(fs),
                                 teacher_proxy=tp(ft))["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


VARIANTS = {"kd": "KD step (fixed teacher)",
            "bd": "bidirectional KD step (teacher fully updated, no proxy or filter)",
            "c2kd_top2": "C2KD step, teacher's top 2 layers updated (Table 3, Ours-dagger)",
            "c2kd_full": "C2KD step, teacher fully updated (Table 3, Ours-double-dagger)"}


def run(repeats: int = 15, device: str = "cpu") -> list[dict]:
    """Rows: benchmark, seconds per step (best of ``repeats``), cost vs KD, speed-up, device.

    The variants are timed round-robin (one step of each per round) with one torch thread, so a
    change of load on a shared machine affects them alike; 15 rounds, because on the shared
    2-core machine 5 once gave a KD minimum 35% too high (and ratios far off).  On a GPU each
    round runs 10 steps of a variant between device synchronisations (best of ``repeats``
    rounds, per step).
    """
    cuda = str(device).startswith("cuda")
    batch, size, inner = (64, 112, 10) if cuda else (BATCH, SIZE, 1)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch_threads(1):
        steps = {v: _setup(v, device, batch, size) for v in VARIANTS}
        for step in steps.values():
            for _ in range(2 if cuda else 1):
                step()  # warm-up (on a GPU: cuDNN's algorithm choice too)
        times = dict.fromkeys(VARIANTS, float("inf"))
        for _ in range(repeats):
            for v, step in steps.items():
                sync()
                start = time.perf_counter()
                for _ in range(inner):
                    step()
                sync()
                times[v] = min(times[v], (time.perf_counter() - start) / inner)
    where = f"{device_label(device)}, ResNet-18 x2, batch {batch} at {size}px"
    return [{"benchmark": label, "seconds": times[v], "cost vs KD": times[v] / times["kd"],
             "speed-up": times["kd"] / times[v], "device": where}
            for v, label in VARIANTS.items()]
