"""KD from a teacher with some channels of one layer nullified (MFH Sec. 5.4, Appendix B.4).

MFH derives teachers of different gamma from one trained teacher by zeroing r% of the channels
of a feature layer during distillation: the least salient ones by Algorithm 1 (a
modality-general teacher), the most salient (modality-specific) or random ones.  The loss is
KD's (:mod:`cmkd.methods.kd`: ``ce_weight * CE + kd_weight * T^2 KL``; MFH Eq. 1 with
rho = ce_weight); only the teacher's forward changes (:func:`cmkd.mfh.nullified_logits`).  The
kept channels are a hyperparameter, so every derived teacher is its own cached job.

The teacher is frozen and in eval mode, and the training items are not augmented, so its
``'pooled'`` features of an item never change during training: with ``cache_teacher`` (the
default) they are computed once per training item and reused at every epoch (and by every job
of the same teacher in the same process), the mask and the classifier applied to the stored
features (:class:`TeacherFeatures`).  This changes no number beyond float rounding: the per-batch
forward (``cache_teacher: false``) gives the same loss and gradients within float tolerance
(tests/test_feature_ranking.py).  Items are known by their content, so an augmented input is
simply a new item (computed, no gain).  Only the ``'pooled'`` layer of a teacher on the CPU is
stored; a block's output, or a teacher on a GPU, takes the per-batch path.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from cmkd.methods.base import register
from cmkd.methods.kd import KD
from cmkd.params import spec


class TeacherFeatures:
    """The ``'pooled'`` features of a frozen eval-mode teacher, one stored vector per input
    item (keyed by a 128-bit BLAKE2b digest of the item's input tensors).

    An item's vector is always computed on its own (a batch of one), so its value does not
    depend on which other items shared its batch, nor on which job of the process met it first:
    a job's numbers stay the same wherever and after whatever it runs.  The stores of the last
    :data:`KEEP` teachers of the process are kept (a teacher is known by a digest of its class,
    its weights and the torch thread count).
    """

    KEEP = 2
    #: items stored per teacher at most (augmented inputs, every draw new, stop being stored)
    MAX_ITEMS = 200_000
    _stores: OrderedDict[str, dict[bytes, torch.Tensor]] = OrderedDict()

    def __init__(self, teacher: torch.nn.Module):
        self.teacher = teacher
        self._print: str | None = None

    @property
    def fingerprint(self) -> str:
        """The teacher's digest, taken at first use (a method is also built on a meta-device
        teacher, to check a job, which has no weights to read)."""
        if self._print is None:
            self._print = self._fingerprint(self.teacher)
        return self._print

    @staticmethod
    def _fingerprint(model: torch.nn.Module) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
        for name, t in model.state_dict().items():
            t = t.detach().cpu().contiguous()
            h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes()
                     if t.numel() else b"")
        return h.hexdigest()

    def _store(self) -> dict[bytes, torch.Tensor]:
        stores = type(self)._stores
        key = f"{self.fingerprint}|threads {torch.get_num_threads()}"
        if key not in stores:
            stores[key] = {}
            while len(stores) > self.KEEP:
                stores.popitem(last=False)
        stores.move_to_end(key)
        return stores[key]

    @staticmethod
    def digests(inputs: list[torch.Tensor]) -> list[bytes]:
        """One digest per item of the batch (the items' bytes, dtypes and shapes)."""
        flat = [x.detach().contiguous() for x in inputs]
        out = []
        for i in range(flat[0].shape[0]):
            h = hashlib.blake2b(digest_size=16)
            for x in flat:
                row = x[i]
                h.update(f"{row.dtype}{tuple(row.shape)}".encode())
                h.update(row.reshape(-1).view(torch.uint8).numpy().tobytes())
            out.append(h.digest())
        return out

    @torch.no_grad()
    def pooled(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """(batch, dim) pooled features of the items of ``inputs`` (CPU tensors)."""
        store = self._store()
        keys = self.digests(inputs)
        rows = []
        for i, k in enumerate(keys):
            row = store.get(k)
            if row is None:
                row = self.teacher.features(*[x[i:i + 1] for x in inputs])["pooled"][0]
                if len(store) < self.MAX_ITEMS:
                    store[k] = row
            rows.append(row)
        return torch.stack(rows)

    @classmethod
    def clear(cls) -> None:
        cls._stores.clear()


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
        cache_teacher: bool = field(default=True, metadata=spec(
            "store the frozen teacher's 'pooled' features of each training item once and "
            "reuse them at every epoch (same numbers within float rounding; layer 'pooled' "
            "on the CPU only); false: the teacher's forward on every batch"))

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
        self.features_store = (TeacherFeatures(self.teacher)
                               if self.hp.cache_teacher and self.hp.layer == "pooled"
                               else None)

    def teacher_forward(self, batch, features: bool = False):
        if features:
            raise ValueError("method 'kd_nullified' gives the teacher's logits only")
        from cmkd.mfh import nullified_logits, nullify_channels

        x = self.inputs(batch, self.teacher_inputs)
        with torch.no_grad():
            if (self.features_store is not None and not self.teacher.training
                    and all(t.device.type == "cpu" for t in x)):
                pooled = self.features_store.pooled(x)
                return self.teacher.classify(nullify_channels(pooled, self.hp.keep))
            return nullified_logits(self.teacher, x, self.hp.layer, self.hp.keep)
