"""The teacher and student jobs of a crossmodal grid, built alike by every notebook.

A :class:`Builder` holds what a grid's jobs share - the params that say where each dataset is
and how it is read (:mod:`cmkd.data.specs`), the training (:class:`Training`) and the params
file's per-method hyperparameters - and makes the jobs: a unimodal :meth:`Builder.teacher`, a
late-fusion :meth:`Builder.fusion_teacher` (C2KD Table 7), and a :meth:`Builder.student` of a
direction trained by a method or preset of :mod:`cmkd.methods`.  A student's teacher is the
unimodal teacher job of the same dataset, modality and seed unless another is given, so every
row of every notebook that names the same teacher shares one trained model (the cache).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cmkd.data import specs
from cmkd.jobs.job import Job


@dataclass(frozen=True)
class Training:
    """How every job of a grid trains.

    optim : ``cmkd.engine.OptimConfig`` fields; epochs / teacher_epochs : of students and
    teachers (the most they train); patience : early stopping of every job (None: all epochs
    run; :func:`cmkd.engine.fit`); batch_size; device; workers : DataLoader worker processes
    per job; method_hparams : per method or preset, over the registry's defaults
    (:func:`cmkd.methods.hparams_for`).
    """

    optim: Mapping[str, Any]
    epochs: int
    teacher_epochs: int
    batch_size: int
    device: str = "auto"
    workers: int = 0
    method_hparams: Mapping[str, Mapping] = field(default_factory=dict)
    patience: int | None = None


class Builder:
    """Jobs of one grid; see the module docstring.

    params : the grid's parameters (a notebook Config as a mapping): dataset roots (the loaders'
        ``PARAM`` names), loader settings and encoder sizes named by :mod:`cmkd.data.specs`.
    training : :class:`Training`.
    """

    def __init__(self, params: Mapping[str, Any], training: Training):
        self.params, self.training = dict(params), training

    def _common(self, dataset: str) -> dict:
        t = self.training
        return dict(dataset_options=specs.loader_options(dataset, self.params),
                    data_root=specs.root(dataset, self.params), optim=dict(t.optim),
                    batch_size=t.batch_size, device=t.device, workers=t.workers,
                    patience=t.patience)

    def _model(self, dataset: str, modality: str, model) -> tuple[str, dict]:
        """The spec's (registry model, options) of ``modality``, or ``model`` = (name, options)
        in its place (``classes`` added from the dataset, ``modality`` from the spec's key)."""
        if model is None:
            return specs.model(dataset, modality, self.params)
        from cmkd import data

        name, opts = model
        return name, {"classes": data.classes(dataset), **dict(opts)}

    def teacher(self, dataset: str, modality: str, seed: int,
                model: tuple[str, Mapping] | None = None) -> Job:
        """The unimodal teacher of ``modality`` (trained alone; its best-validation weights);
        ``model`` = (registry name, options) replaces the spec's network (MFH B.1's audio
        teacher is deeper than its student)."""
        name, opts = self._model(dataset, modality, model)
        return Job(dataset=dataset, model=name, model_options=opts,
                   inputs=(specs.spec(dataset).keys[modality],), kind="teacher",
                   epochs=self.training.teacher_epochs, seed=seed, **self._common(dataset))

    def fusion_teacher(self, dataset: str, fusion: str, direction: str, seed: int,
                       encoders: tuple | None = None) -> Job:
        """A late-fusion teacher (``fusion_concat``, ``fusion_film``, ``fusion_ogm_ge``) on both
        modalities of ``direction`` (teacher's first), trained with OGM-GE for
        ``fusion_ogm_ge`` (C2KD Table 7); ``encoders``: two (registry name, options) in place of
        the spec's networks, in the same order (MFH B.1: LeNet-5 and a 5-layer audio CNN)."""
        from cmkd import data

        s = specs.spec(dataset)
        t_mod, s_mod = specs.modalities(dataset, direction)
        given = (None, None) if encoders is None else tuple(encoders)
        if len(given) != 2:
            raise ValueError(f"encoders must be two (model, options) pairs, got {encoders!r}")
        encoders, options = [], []
        for mod, model in zip((t_mod, s_mod), given):
            name, opts = self._model(dataset, mod, model)
            encoders.append(name)
            options.append({k: v for k, v in opts.items() if k not in ("classes", "modality")})
        return Job(dataset=dataset, model=fusion,
                   model_options={"classes": data.classes(dataset),
                                  "modalities": (s.keys[t_mod], s.keys[s_mod]),
                                  "encoders": tuple(encoders), "encoder_options": tuple(options)},
                   inputs=(s.keys[t_mod], s.keys[s_mod]), kind="teacher",
                   method="ogm_ge" if fusion == "fusion_ogm_ge" else "nokd",
                   epochs=self.training.teacher_epochs, seed=seed, **self._common(dataset))

    def student(self, dataset: str, direction: str, seed: int, method: str,
                row: Mapping[str, Any] | None = None, teacher: Job | None = None,
                model: tuple[str, Mapping] | None = None) -> Job:
        """A student of ``direction``'s student modality trained by ``method`` (a registry name
        or preset) with the grid's ``method_hparams`` and the row's own hyperparameters
        (:func:`cmkd.methods.hparams_for`); its teacher is ``teacher`` or the unimodal teacher
        of the same seed (none for methods that need none); ``model`` = (registry name,
        options) replaces the spec's network."""
        from cmkd import methods

        name, hp = methods.hparams_for(method, self.training.method_hparams, row)
        t_mod, s_mod = specs.modalities(dataset, direction)
        needs = methods.get(name).needs_teacher
        if needs and teacher is None:
            teacher = self.teacher(dataset, t_mod, seed)
        name_, opts = self._model(dataset, s_mod, model)
        return Job(dataset=dataset, model=name_, model_options=opts,
                   inputs=(specs.spec(dataset).keys[s_mod],), method=name, hparams=hp,
                   teacher=teacher if needs else None, epochs=self.training.epochs, seed=seed,
                   **self._common(dataset))
