"""The base class of every distillation method: a small object that wires pure losses
(:mod:`cmkd.distill`) to a student, a teacher, their extra modules and their state.

A method owns no training loop: :func:`cmkd.engine.fit` asks it which parameters to optimise
(:meth:`Method.parameters`), which modules train (:meth:`Method.train_modules`) and, per
mini-batch, for its named loss terms (:meth:`Method.step`).  The mathematics stays in
:mod:`cmkd.distill`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cmkd.distill.dense import is_dense, pixels
from cmkd.metrics.task import IGNORE_INDEX, infer_task
from cmkd.models.batched import run_count
from cmkd.params import ParamError, from_mapping

#: How a method treats its teacher: not trained, trained in its top ``hp.teacher_top_k`` blocks
#: (C2KD Table 3, "partially updated"), or trained in full.
TEACHER_UPDATES = ("frozen", "top_k", "all")

#: name -> Method subclass, filled by :func:`register`.
REGISTRY: dict[str, type[Method]] = {}


@dataclasses.dataclass(frozen=True)
class NoHparams:
    """The hyperparameters of a method that has none."""


class Method:
    """One distillation method (or a baseline) over a student and, optionally, a teacher.

    Subclasses set the class attributes, build their extra modules in ``__init__`` (after
    calling ``super().__init__``) into ``self.extra``, and implement :meth:`step`.

    Class attributes
    ----------------
    name : the registry name (``cmkd.methods.get(name)``).
    Hparams : a frozen dataclass whose fields carry :func:`cmkd.params.spec` metadata and
        defaults (the papers' values); a notebook's params file sets them per method, e.g.
        ``method_hparams: {kd: {temperature: 4}}``.
    teacher_update : 'frozen', 'top_k' or 'all' (see :data:`TEACHER_UPDATES`).  A method whose
        Hparams have a ``teacher_update`` field (C2KD: partially or fully updated teacher) takes
        the value from its hyperparameters instead; 'top_k' reads ``hp.teacher_top_k``.
    needs_teacher : whether building without a teacher is an error.

    Parameters
    ----------
    hp : an ``Hparams`` instance, or a mapping of hyperparameters (validated; defaults filled).
    student, teacher : backbones following the ``cmkd.models.base.Backbone`` contract
        (``forward``, ``forward_features`` -> (logits, dict with 'pooled'), ``feature_shapes``,
        ``classes``, ``modalities``, ``blocks()``).  ``teacher`` may be None for methods that
        do not need one.
    classes : number of classes of the task.
    student_inputs, teacher_inputs : batch keys fed to each model, in order (one per modality);
        default: the model's ``modalities``.
    runs : build for a stack of R independent runs (stacked models, :func:`cmkd.models.stacked`:
        inputs, logits and features carry a leading run dimension): the loss terms are then per
        run, shape (R,) ('total' too: :func:`cmkd.engine.fit` sums it, so each run's gradient
        is its own).
    seeds : with ``runs``, one base seed per run for the method's own stacked modules
        (proxies, weak heads, regressors; :class:`cmkd.models.batched.BatchedLinear`
        initialisation); default: drawn from torch's global generator.

    Attributes
    ----------
    hp, student, teacher, classes, student_inputs, teacher_inputs, runs
    n_runs : R with ``runs``, else None.
    extra : nn.ModuleDict of the method's own modules (regressors, proxies, shadow heads).
    last_student_logits : the detached student logits of the latest :meth:`student_forward`
        call (the engine's running train metrics read them); None before any step.
    """

    name: ClassVar[str] = ""
    Hparams: ClassVar[type] = NoHparams
    teacher_update: ClassVar[str] = "frozen"
    needs_teacher: ClassVar[bool] = True

    def __init__(self, hp: Any = None, *, student: nn.Module, teacher: nn.Module | None = None,
                 classes: int, student_inputs: Sequence[str] | None = None,
                 teacher_inputs: Sequence[str] | None = None, runs: bool = False,
                 seeds: Sequence[int] | None = None):
        self.hp = hp if isinstance(hp, self.Hparams) else self.make_hparams(hp)
        if self.needs_teacher and teacher is None:
            raise ValueError(f"method {self.name!r} needs a teacher; got teacher=None")
        if not isinstance(classes, int) or classes < 1:
            raise ValueError(f"classes must be a positive int, got {classes!r}")
        self.student, self.teacher, self.classes, self.runs = student, teacher, classes, runs
        self.n_runs = run_count(student) if runs else None
        if runs and teacher is not None and run_count(teacher) != self.n_runs:
            raise ValueError(f"method {self.name!r}: a stack of {self.n_runs} student runs "
                             f"needs a teacher stack of as many runs, got {run_count(teacher)}")
        self.student_inputs = _input_keys(student_inputs, student, "student")
        self.teacher_inputs = (() if teacher is None
                               else _input_keys(teacher_inputs, teacher, "teacher"))
        self.extra = nn.ModuleDict()
        self.last_student_logits: torch.Tensor | None = None
        self._seeds = None
        if runs:
            self._seeds = ([int(s) for s in torch.randint(0, 2**31 - 1, (self.n_runs,))]
                           if seeds is None else [int(s) for s in seeds])
            if len(self._seeds) != self.n_runs:
                raise ValueError(f"method {self.name!r}: {len(self._seeds)} seeds for a stack "
                                 f"of {self.n_runs} runs")
        update = getattr(self.hp, "teacher_update", type(self).teacher_update)
        if update not in TEACHER_UPDATES:
            raise ValueError(f"method {self.name!r}: teacher_update must be one of "
                             f"{TEACHER_UPDATES}, got {update!r}")
        self.teacher_update = update
        self._teacher_params = self._prepare_teacher()

    # ------------------------------------------------------------------ hyperparameters
    @classmethod
    def make_hparams(cls, values: Mapping[str, Any] | None = None):
        """Validate ``values`` (missing names take their defaults) into an ``Hparams``.

        Raises :class:`cmkd.params.ParamError` naming the method, the parameter and what is
        allowed.
        """
        values = {} if values is None else values
        if not isinstance(values, Mapping):
            raise ParamError(None, f"hyperparameters must be a mapping of names to values, got "
                                   f"{type(values).__name__}", f"method {cls.name!r}")
        defaults = {}
        for f in dataclasses.fields(cls.Hparams):
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory()
        return from_mapping(cls.Hparams, {**defaults, **values}, source=f"method {cls.name!r}")

    # ------------------------------------------------------------------ teacher and parameters
    def _prepare_teacher(self) -> list[nn.Parameter]:
        """Set ``requires_grad`` on the teacher's parameters; return those that train."""
        if self.teacher is None:
            return []
        if self.teacher_update == "top_k":
            top_k = getattr(self.hp, "teacher_top_k", None)
            blocks = self._teacher_blocks()
            if not isinstance(top_k, int) or not 1 <= top_k <= len(blocks):
                raise ValueError(f"method {self.name!r}: teacher_update 'top_k' needs a "
                                 f"hyperparameter teacher_top_k in [1, {len(blocks)}] (the "
                                 f"teacher's blocks), got {top_k!r}")
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        trained = [p for m in self.teacher_blocks_trained() for p in m.parameters()]
        for p in trained:
            p.requires_grad_(True)
        return trained

    def _teacher_blocks(self) -> list[nn.Module]:
        """The teacher's blocks, input to output: ``blocks()`` (the Backbone contract), else its
        direct children that hold parameters."""
        blocks = getattr(self.teacher, "blocks", None)
        if callable(blocks):
            return list(blocks())
        return [m for m in self.teacher.children() if any(True for _ in m.parameters())]

    def teacher_blocks_trained(self) -> list[nn.Module]:
        """The teacher modules that train: none, its top ``hp.teacher_top_k`` blocks, or all."""
        if self.teacher is None or self.teacher_update == "frozen":
            return []
        if self.teacher_update == "all":
            return [self.teacher]
        return self._teacher_blocks()[-self.hp.teacher_top_k:]

    def parameters(self) -> list[nn.Parameter]:
        """What the optimiser moves: the student, the extra modules and the teacher's trained
        part (each parameter once)."""
        out, seen = [], set()
        for p in [*self.student.parameters(), *self.extra.parameters(), *self._teacher_params]:
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    def modules(self) -> list[nn.Module]:
        """Every module of the method: student, teacher (if any) and extra."""
        return [m for m in (self.student, self.teacher, self.extra) if m is not None]

    def train_modules(self) -> list[nn.Module]:
        """The modules switched to train() during training; a frozen teacher (or the frozen
        lower blocks of a partially updated one) stays in eval()."""
        return [self.student, self.extra, *self.teacher_blocks_trained()]

    def train(self) -> None:
        """Every module to eval(), then :meth:`train_modules` to train()."""
        self.eval()
        for m in self.train_modules():
            m.train()

    def eval(self) -> None:
        """Every module to eval()."""
        for m in self.modules():
            m.eval()

    def to(self, device: torch.device | str, memory_format: torch.memory_format | None = None
           ) -> Method:
        """Move every module to ``device`` (and ``memory_format``, e.g. channels_last)."""
        for m in self.modules():
            m.to(device)
            if memory_format is not None:
                m.to(memory_format=memory_format)
        return self

    def state_dict(self) -> dict[str, dict]:
        """The state of each module: 'student', 'extra' and (if any) 'teacher'."""
        out = {"student": self.student.state_dict(), "extra": self.extra.state_dict()}
        if self.teacher is not None:
            out["teacher"] = self.teacher.state_dict()
        return out

    def run_seeds(self, offset: int = 0) -> list[int]:
        """With ``runs``: one seed per run for a stacked module of the method (the ``seeds``
        given at build time), plus ``offset`` (a different one per module)."""
        if not self.runs:
            raise ValueError("run_seeds is for methods built with runs=True")
        return [s + offset for s in self._seeds]

    # ------------------------------------------------------------------ forwards
    @staticmethod
    def inputs(batch: Mapping[str, torch.Tensor], keys: Sequence[str]) -> list[torch.Tensor]:
        """The tensors of ``batch`` under ``keys``, in order."""
        missing = [k for k in keys if k not in batch]
        if missing:
            raise KeyError(f"batch has no key(s) {missing}; it holds {sorted(batch)}")
        return [batch[k] for k in keys]

    def student_forward(self, batch: Mapping[str, torch.Tensor], features: bool = False):
        """The student's logits (batch, classes), or (logits, features) with ``features``."""
        x = self.inputs(batch, self.student_inputs)
        out = forward_model(self.student, x, features)
        logits = out[0] if features else out
        self.last_student_logits = logits.detach()
        return out

    def teacher_forward(self, batch: Mapping[str, torch.Tensor], features: bool = False):
        """The teacher's logits (or (logits, features)); without autograd when it is frozen."""
        if self.teacher is None:
            raise ValueError(f"method {self.name!r} was built without a teacher")
        x = self.inputs(batch, self.teacher_inputs)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.teacher_update != "frozen"):
            return forward_model(self.teacher, x, features)

    def supervised_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The task loss: cross entropy (classes; segmentation with the void label
        :data:`cmkd.metrics.task.IGNORE_INDEX` ignored) or binary cross entropy (multilabel
        float targets, e.g. MM-IMDB genres), averaged over the batch (and pixels).

        With ``runs``: logits (runs, batch, classes), target (runs, batch) -> (runs,)
        (classification).
        """
        if self.runs:
            if logits.dim() != 3 or target.shape != logits.shape[:2]:
                raise ValueError(f"with runs=True expected logits (runs, batch, classes) and "
                                 f"target (runs, batch), got {tuple(logits.shape)} and "
                                 f"{tuple(target.shape)}")
            ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
            return ce.view(target.shape).mean(-1)
        task = infer_task(logits, target)
        if task == "multilabel":
            return F.binary_cross_entropy_with_logits(logits, target)
        if task == "segmentation":
            return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
        return F.cross_entropy(logits, target)

    def samples(self, target: torch.Tensor, *logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(*logits, target)`` as the losses of :mod:`cmkd.distill` take them: classification
        logits unchanged; per-pixel logits (batch, classes, H, W) with a (batch, H, W) target as
        one (N, classes) row per labelled pixel and (N,) labels (:func:`cmkd.distill.dense.pixels`:
        void pixels dropped, every labelled pixel of the batch one sample)."""
        if not is_dense(logits[0]):
            return (*logits, target)
        if self.runs:
            raise ValueError(f"method {self.name!r}: stacked runs (runs=True) are for "
                             f"classification; segmentation trains one run at a time")
        return pixels(target, *logits)

    # ------------------------------------------------------------------ training hooks
    def train_batch_sampler(self, n: int, batch_size: int, seed: int):
        """A DataLoader ``batch_sampler`` the method needs for its training split of ``n``
        samples (DLB pairs consecutive batches), or None for ordinary shuffled batches."""
        return None

    def after_backward(self, epoch: int) -> None:
        """Called by the training loop between ``backward()`` and the optimiser step (OGM-GE
        modulates gradients here).  Nothing by default."""

    def trains_teacher(self) -> bool:
        """Whether training changes the teacher (online and bidirectional methods)."""
        return self.teacher is not None and self.teacher_update != "frozen"

    # ------------------------------------------------------------------ the step
    def step(self, batch: Mapping[str, torch.Tensor], epoch: int) -> dict[str, torch.Tensor]:
        """Run the forwards of one mini-batch and return the named loss terms.

        Returns
        -------
        dict with 'total' (what is back-propagated; (runs,) with ``runs``), one entry per loss
        term, and optional detached diagnostics under keys starting with 'n_' (counts, summed
        over an epoch in the history) or 'keep' (fractions, averaged).
        """
        raise NotImplementedError


def forward_model(model: nn.Module, inputs: Sequence[torch.Tensor], features: bool = False):
    """``model``'s logits, or ``(logits, features)`` through its ``forward_features`` with
    ``features`` (the Backbone contract; stacked models keep it with a leading run dimension)."""
    if not features:
        return model(*inputs)
    forward_features = getattr(model, "forward_features", None)
    if not callable(forward_features):
        raise TypeError(f"{type(model).__name__} has no forward_features: it cannot give "
                        f"(logits, features)")
    return forward_features(*inputs)


def model_feature_shapes(model: nn.Module) -> dict[str, tuple]:
    """``model.feature_shapes`` (the Backbone contract; a stacked model announces its runs'
    shapes, without the run and batch dimensions)."""
    shapes = getattr(model, "feature_shapes", None)
    if shapes is None:
        raise ValueError(f"{type(model).__name__} announces no feature_shapes (the Backbone "
                         f"contract)")
    return dict(shapes)


def resolve_feature(model: nn.Module, name: str, role: str, method: str,
                    fallback: str | None = None) -> str:
    """The feature of ``model`` a method reads: ``name`` when the model has it, else
    ``fallback`` when given (for example C2KD's proxies on 'layer3', a ResNet's map, fall back
    to 'pooled' on models without one); a ValueError listing the model's features otherwise."""
    shapes = model_feature_shapes(model)
    if name in shapes:
        return name
    if fallback is not None and fallback in shapes:
        return fallback
    raise ValueError(f"method {method!r}: the {role} has no feature {name!r}; it has "
                     f"{', '.join(map(repr, shapes))}")


def pool_features(features: torch.Tensor, runs: bool = False) -> torch.Tensor:
    """Global average pooling of a feature map to (batch, channels) ((runs, batch, channels)
    with ``runs``): maps are averaged over their trailing dimensions, vectors returned as they
    are."""
    lead = 3 if runs else 2
    if features.dim() <= lead:
        return features
    return features.flatten(lead).mean(-1)


def _input_keys(keys: Sequence[str] | None, model: nn.Module, role: str) -> tuple[str, ...]:
    if keys is None:
        keys = getattr(model, "modalities", None)
        if keys is None:
            raise ValueError(f"{role}_inputs not given and the {role} model has no 'modalities' "
                             f"attribute; pass the batch keys, e.g. {role}_inputs=('audio',)")
    if isinstance(keys, str):
        keys = (keys,)
    keys = tuple(keys)
    if not keys or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"{role}_inputs must be a non-empty tuple of batch keys, got {keys!r}")
    return keys


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a Method subclass to the registry under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"register takes a Method subclass, got {cls!r}")
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no 'name'")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is already registered by "
                         f"{REGISTRY[cls.name].__name__}")
    if not dataclasses.is_dataclass(cls.Hparams):
        raise TypeError(f"{cls.__name__}.Hparams must be a dataclass")
    REGISTRY[cls.name] = cls
    return cls
