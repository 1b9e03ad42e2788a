"""A job: one training run as a small frozen, self-contained, JSON-serialisable config.

A job names everything its run depends on: the dataset (name, options, root), the model it trains
(registry name, options, the batch keys it reads), the teacher (another :class:`Job`, whose
trained model is loaded from the cache, or None), the method (registry name and hyperparameters),
the optimiser and schedule, epochs, batch size, loader workers, seed, device preference and the
metric that selects the best epoch.  Its :attr:`Job.key` names its folder in the cache
(:mod:`cmkd.jobs.cache`).

The key is the sha256 of the job's canonical JSON (the teacher included by its own key; not
``workers``, and ``device`` as its type) and of what the run depends on
(:func:`cmkd.jobs.keys.dependencies`): the code it runs (the modules it imports, the user's
encoder, method or loader modules included), the content of the data it reads (a fingerprint of
``data_root``) and the environment (torch's version, the lock's pins of the packages that
compute).  Change any of them and the job runs again; build the same job twice, anywhere with
the same code, data and environment, and it names the same results.  docs/cache.md has the
table of edits and the jobs they rerun.

Names and hyperparameters are checked on construction (unknown dataset, model, method, option or
hyperparameter names; hyperparameter values through the method's validated ``Hparams``), and
:meth:`Job.check` builds the models and the method on PyTorch's 'meta' device (no memory, no
compute) so that bad option values or teacher / student mismatches fail before any training.
Options and hyperparameters are stored completed with their defaults, so ``{}`` and the explicit
defaults give the same key.

A job may be a *stack* of runs (``runs``): R runs of one architecture, method and training that
differ in their seed and, optionally, their data (per-run dataset options), trained at once as
stacked models (:func:`cmkd.models.stacked`) by the one loop.  Its teacher is then a stack of the
same runs.  Its result is one row per run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmkd.jobs import keys
from cmkd.params import ParamError

#: 'teacher' jobs train one model alone (method 'nokd', or 'ogm_ge' for a fusion model) and give
#: it to the student jobs that name them; 'student' jobs train a student, with or without one.
KINDS = ("teacher", "student")

#: Bumped when the layout of a job's JSON or of its cache folder changes meaning.
SCHEMA = 1

_SOURCE = "job"


def canonical(value: Any, name: str = "value") -> Any:
    """``value`` as plain JSON data: mappings with string keys (sorted on dump), lists for
    tuples, finite floats, ints, bools, strings and None; anything else is a ParamError naming
    ``name``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParamError(name, f"must be finite, got {value!r}", _SOURCE)
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ParamError(name, f"keys must be strings, got {k!r}", _SOURCE)
            out[k] = canonical(v, f"{name}.{k}")
        return dict(sorted(out.items()))
    if isinstance(value, (list, tuple)):
        return [canonical(v, f"{name}[{i}]") for i, v in enumerate(value)]
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", None) == 0:
        return canonical(item(), name)
    raise ParamError(name, f"must be JSON data (numbers, strings, lists, mappings), got "
                           f"{type(value).__name__} {value!r}", _SOURCE)


def dumps(value: Any) -> str:
    """Canonical JSON text: sorted keys, no spaces, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _optim(value):
    from cmkd.engine import OptimConfig

    if isinstance(value, OptimConfig):
        return value
    if value is None or isinstance(value, Mapping):
        return OptimConfig.from_mapping(value, source=f"{_SOURCE} optim")
    raise ParamError("optim", f"must be an OptimConfig or a mapping, got {type(value).__name__}",
                     _SOURCE)


def _keys(value, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(k, str) and k for k in value)):
        raise ParamError(name, f"must be a non-empty list of batch keys (e.g. ['audio']), got "
                               f"{value!r}", _SOURCE)
    return tuple(value)


def _mapping(value, name: str) -> dict:
    """Options given as a mapping with string keys (None: none), else a ParamError naming
    ``name``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ParamError(name, f"must be a mapping of option names to values, got {value!r}",
                         _SOURCE)
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise ParamError(name, f"keys must be option names (strings), got {bad[0]!r}", _SOURCE)
    return dict(value)


def _positive_int(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ParamError(name, f"must be an int >= {low}, got {value!r}", _SOURCE)
    return value


def _defaults(signature_params, given: Mapping, name: str, what: str) -> dict:
    """``given`` completed with the JSON-able defaults of ``signature_params``."""
    out = {}
    for p in signature_params:
        if p.name in given:
            out[p.name] = given[p.name]
        elif p.default is not inspect.Parameter.empty:
            try:
                out[p.name] = canonical(p.default, f"{name}.{p.name}")
            except ParamError:
                continue  # a default that is not JSON data is left to the factory
    return canonical(out, name)


def _model_options(model: str, options: Mapping) -> dict:
    from cmkd import models

    try:
        allowed = models.options(model)
    except ValueError as err:
        raise ParamError("model", str(err), _SOURCE) from None
    unknown = [k for k in options if k not in allowed]
    missing = [k for k, d in allowed.items() if d is inspect.Parameter.empty and k not in options]
    if unknown or missing:
        described = ", ".join(k if d is inspect.Parameter.empty else f"{k}={d!r}"
                              for k, d in allowed.items())
        what = (f"unknown option(s) {', '.join(map(repr, unknown))}" if unknown
                else f"missing required option(s) {', '.join(missing)}")
        raise ParamError("model_options", f"model {model!r}: {what}; allowed options: "
                                          f"{described}", _SOURCE)
    params = inspect.signature(models.registry._factory(model)).parameters.values()
    return _defaults(params, options, "model_options", f"model {model!r}")


def _dataset_options(dataset: str, options: Mapping) -> dict:
    from cmkd import data

    try:
        mod = data.module(dataset)
        data.check_options(dataset, mod.load, options)
    except ValueError as err:
        name = "dataset" if dataset not in data.DATASETS else "dataset_options"
        raise ParamError(name, str(err), _SOURCE) from None
    params = list(inspect.signature(mod.load).parameters.values())[2:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return canonical(dict(options), "dataset_options")
    return _defaults(params, options, "dataset_options", f"dataset {dataset!r}")


def _runs(value, dataset: str, options: Mapping) -> tuple:
    """The runs of a stack, validated: a tuple of ``{'dataset_options': {...}, 'seed': int}``
    (each run's options checked merged over the job's)."""
    if value is None:
        value = ()
    if isinstance(value, (str, Mapping)) or not isinstance(value, (list, tuple)):
        raise ParamError("runs", f"must be a list of mappings {{seed, dataset_options}}, got "
                                 f"{value!r}", _SOURCE)
    out = []
    for i, run in enumerate(value):
        if not isinstance(run, Mapping) or "seed" not in run:
            raise ParamError("runs", f"run {i} must be a mapping with a 'seed' (and optionally "
                                     f"'dataset_options'), got {run!r}", _SOURCE)
        unknown = sorted(set(run) - {"seed", "dataset_options"})
        if unknown:
            raise ParamError("runs", f"run {i} has unknown key(s) {unknown}; allowed: seed, "
                                     f"dataset_options", _SOURCE)
        own = _mapping(run.get("dataset_options"), f"runs[{i}].dataset_options")
        _dataset_options(dataset, {**options, **own})
        out.append({"dataset_options": canonical(own, f"runs[{i}].dataset_options"),
                    "seed": _positive_int(run["seed"], f"runs[{i}].seed", 0)})
    return tuple(out)


@dataclass(frozen=True)
class Job:
    """One training run; see the module docstring.

    Parameters
    ----------
    dataset : a name of ``cmkd.data.DATASETS`` (built in, or added by
        :func:`cmkd.data.register` in this process).
    model : a ``cmkd.models`` registry name: the student of a 'student' job, the teacher model
        of a 'teacher' job.
    inputs : the batch keys fed to ``model``, in order (e.g. ``('audio',)``).
    kind : 'student' (default) or 'teacher': a model kept at its best validation epoch for
        students to distil from, trained alone (a method that needs no teacher) or from a
        teacher job of its own (a method that needs one: Xue et al. 2021's pseudo-labels, the
        modality-specific teacher of MFH Table 7).
    method : a ``cmkd.methods`` registry name ('nokd' default).
    hparams : the method's hyperparameters (validated, stored with defaults filled).
    teacher : the teacher :class:`Job` (kind 'teacher', same dataset and root), or None.  Its
        best-validation model, from the cache, is the teacher; it reads ``teacher.inputs``.
    dataset_options : options of ``cmkd.data.load`` (stored with defaults filled).
    data_root : the real dataset's folder (``pairs``: the file); None for the embedded sets.
    model_options : options of ``cmkd.models.build`` (``classes`` where the model requires it).
    optim : a ``cmkd.engine.OptimConfig`` or a mapping of its fields.
    epochs, batch_size : training length and mini-batch size (evaluation uses the same size).
    seed : seeds the model initialisation, the method's extra modules and the data order.
    device : 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' (the device actually used is in the row).
    metric : a name of ``cmkd.metrics.task.METRICS``; selects the best epoch and is reported.
    workers : DataLoader worker processes; not part of the key.  The embedded and array-backed
        sets draw nothing at random while loading, so their results do not depend on it; the
        real loaders' random augmentation (training crops, flips, frames) draws from the loader
        workers' seeded generators, so 0 and N workers give other, equally valid draws, which
        the cache treats as the same job.
    runs : empty for one run; for a stack of R runs, R mappings ``{'seed': int,
        'dataset_options': {...}}``: run r's models and the method's stacked modules are
        initialised from its seed, its data are ``dataset_options`` updated with its own (e.g.
        another draw or setting); ``seed`` then seeds what the runs share (the batch order).
    test_every : the test split is evaluated every ``test_every`` epochs, at the last one and
        where validation improves (:func:`cmkd.engine.fit`); 1 (default): the whole test curve;
        0: only at the last epoch and at the best-validation state, after training.
    patience : early stopping (:func:`cmkd.engine.fit`): training ends once validation has
        not improved for ``patience`` epochs (every run of a stack); None (default): ``epochs``
        epochs are trained.
    """

    dataset: str
    model: str
    inputs: tuple[str, ...]
    kind: str = "student"
    method: str = "nokd"
    hparams: Mapping[str, Any] = field(default_factory=dict)
    teacher: Job | None = None
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    model_options: Mapping[str, Any] = field(default_factory=dict)
    optim: Any = None
    epochs: int = 1
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    metric: str = "accuracy"
    workers: int = 0
    runs: tuple = ()
    test_every: int = 1
    patience: int | None = None

    def __post_init__(self):
        from cmkd import methods
        from cmkd.metrics.task import METRICS
        from cmkd.runtime import DEVICES

        def put(name, value):
            object.__setattr__(self, name, value)

        if self.kind not in KINDS:
            raise ParamError("kind", f"must be one of {KINDS}, got {self.kind!r}", _SOURCE)
        for name in ("dataset", "model", "method"):
            if not isinstance(getattr(self, name), str):
                raise ParamError(name, f"must be a name (str), got {getattr(self, name)!r}",
                                 _SOURCE)
        put("inputs", _keys(self.inputs, "inputs"))
        if self.data_root is not None:
            put("data_root", str(self.data_root))
        put("dataset_options", _dataset_options(
            self.dataset, _mapping(self.dataset_options, "dataset_options")))
        put("model_options", _model_options(self.model,
                                            _mapping(self.model_options, "model_options")))
        put("runs", _runs(self.runs, self.dataset, self.dataset_options))
        try:
            cls = methods.get(self.method)
        except ParamError as err:
            raise ParamError("method", err.message, _SOURCE) from None
        hp = cls.make_hparams(self.hparams)
        put("hparams", canonical(dataclasses.asdict(hp), "hparams"))
        put("optim", _optim(self.optim))
        put("epochs", _positive_int(self.epochs, "epochs"))
        put("batch_size", _positive_int(self.batch_size, "batch_size"))
        put("seed", _positive_int(self.seed, "seed", 0))
        put("workers", _positive_int(self.workers, "workers", 0))
        put("test_every", _positive_int(self.test_every, "test_every", 0))
        if self.patience is not None:
            put("patience", _positive_int(self.patience, "patience"))
        if not isinstance(self.device, str) or (self.device not in DEVICES
                                                and not self.device.startswith("cuda:")):
            raise ParamError("device", f"must be one of {DEVICES} or 'cuda:N', got "
                                       f"{self.device!r}", _SOURCE)
        if self.metric not in METRICS:
            raise ParamError("metric", f"must be one of {METRICS}, got {self.metric!r}", _SOURCE)
        if self.kind == "teacher":
            if cls.needs_teacher != (self.teacher is not None):
                raise ParamError("kind", "a 'teacher' job trains its model alone (method 'nokd', "
                                         "or 'ogm_ge' for a fusion model; teacher None) or "
                                         "distils it from a teacher job (a method that needs a "
                                         "teacher, e.g. 'kd' on another network's pseudo-labels; "
                                         f"teacher given): got method {self.method!r}, teacher "
                                         f"{self.teacher!r}", _SOURCE)
        if self.teacher is not None:
            t = self.teacher
            if not isinstance(t, Job):
                raise ParamError("teacher", f"must be a Job (kind 'teacher') or None, got "
                                            f"{type(t).__name__}", _SOURCE)
            if t.kind != "teacher":
                raise ParamError("teacher", f"must be a job of kind 'teacher', got kind "
                                            f"{t.kind!r}", _SOURCE)
            if (t.dataset, t.data_root) != (self.dataset, self.data_root):
                raise ParamError("teacher", f"the teacher job trains on dataset {t.dataset!r} "
                                            f"(root {t.data_root!r}) but this job on "
                                            f"{self.dataset!r} (root {self.data_root!r}); a "
                                            f"teacher reads the student's batches", _SOURCE)
            t_data = [r["dataset_options"] for r in t.runs]
            if len(t.runs) != len(self.runs) or t_data != [r["dataset_options"]
                                                         for r in self.runs]:
                raise ParamError("teacher", f"a stack of {len(self.runs)} run(s) needs a teacher "
                                            f"stack of the same runs' data; the teacher job has "
                                            f"{len(t.runs)} run(s) "
                                            f"{'with other data' if t.runs else ''}".rstrip(),
                                 _SOURCE)
        elif cls.needs_teacher:
            raise ParamError("teacher", f"method {self.method!r} needs a teacher job; got None",
                             _SOURCE)

    # ------------------------------------------------------------------ identity
    def config(self) -> dict:
        """The job as canonical JSON data, the teacher as its full config (``job.json``)."""
        out = {"schema": SCHEMA}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "teacher":
                value = None if value is None else value.config()
            elif f.name == "optim":
                value = dataclasses.asdict(value)
            out[f.name] = canonical(value, f.name)
        return out

    def _identity(self) -> dict:
        ident = self.config()
        ident["teacher"] = None if self.teacher is None else self.teacher.key
        return ident

    def _key_identity(self) -> dict:
        """The fields that name the results: not ``workers`` (loader processes), ``device``
        as the type of the device it gives here (:func:`cmkd.jobs.keys.device_type`)."""
        ident = self._identity()
        del ident["workers"]
        ident["device"] = keys.device_type(self.device)
        return ident

    @functools.cached_property
    def key(self) -> str:
        """sha256 (hex) of the canonical JSON of the job's results-naming fields (the teacher
        by its key, :meth:`_key_identity`) and of :func:`cmkd.jobs.keys.dependencies` (code,
        data, environment); the name of its cache folder.  Computed once per job object (and
        kept when the job is pickled to a worker)."""
        text = dumps({"job": self._key_identity(), **keys.dependencies(self)})
        return hashlib.sha256(text.encode()).hexdigest()

    def __hash__(self) -> int:
        return hash(dumps(self._identity()))

    def to_json(self) -> str:
        return json.dumps(self.config(), sort_keys=True, indent=1)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Job:
        """The Job of a :meth:`config` mapping (as stored in ``job.json``)."""
        values = dict(config)
        schema = values.pop("schema", SCHEMA)
        if schema != SCHEMA:
            raise ParamError("schema", f"job schema {schema!r} is not {SCHEMA}", _SOURCE)
        if values.get("teacher") is not None:
            values["teacher"] = cls.from_config(values["teacher"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ParamError(unknown[0], f"unknown job field; fields: {', '.join(sorted(known))}",
                             _SOURCE)
        return cls(**values)

    @property
    def stacked(self) -> bool:
        """Whether the job is a stack of runs (``runs`` not empty)."""
        return bool(self.runs)

    def run_seeds(self) -> list[int]:
        """The seed of each run of a stack."""
        return [r["seed"] for r in self.runs]

    def run_dataset_options(self, run: int | None = None) -> dict:
        """The dataset options of run ``run`` of a stack (``dataset_options`` updated with the
        run's own), or the job's for a single run (``run`` None)."""
        if run is None:
            return dict(self.dataset_options)
        return {**self.dataset_options, **self.runs[run]["dataset_options"]}

    def build_model(self, check: bool = False):
        """The job's model, freshly initialised: seeded by ``seed`` for one run, a stack
        (:func:`cmkd.models.stacked`) with run r seeded by its own seed (``check``: a stack of
        the first run only, what :meth:`check` builds)."""
        from cmkd import models

        if self.stacked:
            seeds = self.run_seeds()[:1] if check else self.run_seeds()
            return models.stacked(self.model, seeds, **self.model_options)
        return models.build(self.model, **self.model_options)

    def replace(self, **changes) -> Job:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ pre-flight
    def check(self) -> None:
        """Build the models and the method on the 'meta' device (no memory, no compute) and
        check a real dataset's folder, so that bad option values, a teacher the method cannot
        use or a missing dataset fail before any training."""
        import torch

        from cmkd import data, methods

        if self.dataset in data.REAL + data.FILES:
            mod = data.module(self.dataset)
            if self.data_root is None:
                what = "file" if self.dataset in data.FILES else "folder"
                raise ParamError("data_root", f"dataset {self.dataset!r} is read from disk; give "
                                              f"its {what} (expected layout: {mod.LAYOUT})",
                                 _SOURCE)
            problems = mod.check(Path(self.data_root))
            if problems:
                raise ParamError("data_root", f"dataset {self.dataset!r} at {self.data_root}: "
                                              f"{'; '.join(problems)}", _SOURCE)
        # one run is built on the 'meta' device (no memory, no compute); a stack as a stack of
        # its first run (what its R runs share) on the CPU, with the global generator restored:
        # stacked layers draw from their own generators, which the meta device turns into a
        # slow path (it imports torch's compiler stack)
        place = (torch.random.fork_rng(devices=[]) if self.stacked
                 else torch.device("meta"))
        with place:
            try:
                student = self.build_model(check=True)
                teacher = None
                if self.teacher is not None:
                    self.teacher.check()
                    teacher = self.teacher.build_model(check=True)
            except (ValueError, TypeError) as err:
                raise ParamError("model_options", str(err), _SOURCE) from None
            classes = getattr(student, "classes", None)
            if teacher is not None and getattr(teacher, "classes", None) != classes:
                raise ParamError("teacher", f"the teacher model has {teacher.classes} classes, "
                                            f"the student {classes}", _SOURCE)
            try:
                methods.build(self.method, self.hparams, student=student, teacher=teacher,
                              classes=classes, student_inputs=self.inputs,
                              teacher_inputs=None if teacher is None else self.teacher.inputs,
                              **self.method_stack(check=True))
            except (ValueError, TypeError) as err:
                raise ParamError("method", f"{self.method!r} cannot be built: {err}",
                                 _SOURCE) from None

    def method_stack(self, check: bool = False) -> dict:
        """The keywords that build the job's method for its stack (``runs``, ``seeds``; the
        first run only with ``check``), or none for one run."""
        if not self.stacked:
            return {}
        return {"runs": True, "seeds": self.run_seeds()[:1] if check else self.run_seeds()}

    def describe(self) -> str:
        """One line: kind, dataset, model(inputs), method, seed (and runs), key prefix."""
        teacher = "" if self.teacher is None else (
            f" <- {self.teacher.model}({','.join(self.teacher.inputs)})")
        stack = f" x {len(self.runs)} runs" if self.stacked else ""
        return (f"{self.kind} {self.dataset} {self.model}({','.join(self.inputs)}){teacher} "
                f"{self.method} seed {self.seed}{stack} [{self.key[:12]}]")
