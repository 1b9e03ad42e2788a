"""Datasets: the MVD synthetic generator, the embedded sets and loaders for the real datasets.

``load(name, root, split, **options)`` opens any registered dataset as a torch Dataset whose
items are dicts of modality tensors plus 'label'.  Real datasets are read from ``root`` (a params
file names it with the dataset's root parameter, e.g. ``avmnist_root``); the embedded sets ignore
``root``.  ``status(root)`` (and ``cmkd datasets --root PATH``) says, for a folder that holds the
real datasets under their usual folder names, which are found, missing or malformed.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from pathlib import Path

#: name -> module under cmkd.data; each module has load(root, split, **options) and, for real
#: datasets, check(root) -> problems, PARAM, DIRNAME and LAYOUT.
DATASETS = {
    "mvd": "mvd",                    # synthetic: K-class MVD data, MFH Fig. 2 layout
    "avdigits": "avdigits",          # embedded: AV-MNIST stand-in
    "rgbd_scenes": "rgbd_scenes",    # procedural: NYU Depth V2 stand-in
    "mfeat": "mfeat",                # embedded: UCI Multiple Features (six views of digits)
    "avmnist_mini": "avmnist_mini",  # embedded: AV-MNIST from real MNIST digits and FSDD speech
    "avmnist": "avmnist",
    "ravdess": "ravdess",
    "cremad": "cremad",
    "ave": "ave",
    "vggsound": "vggsound",
    "nyudv2": "nyudv2",              # SA-Gate / DFormer layout
    "nyudv2_cen": "nyudv2_cen",      # CEN layout
    "mmimdb": "mmimdb",
    "crisismmd": "crisismmd",
    "pairs": "pairs",                # your own paired data: one .npz / .pt file (root: the file)
}
EMBEDDED = ("mvd", "avdigits", "rgbd_scenes", "mfeat", "avmnist_mini")
#: datasets read from one file named by ``root`` (their module's PARAM, LAYOUT, check(root))
FILES = ("pairs",)
#: datasets read from a folder (their module's PARAM, DIRNAME, LAYOUT, check(root))
REAL = tuple(n for n in DATASETS if n not in EMBEDDED + FILES)
#: the names added by :func:`register` in this process
REGISTERED: dict[str, object] = {}


def module(name: str):
    """The loader module of a dataset (for a name added by :func:`register`, the module or the
    object holding its ``load``, ``CLASSES`` or ``classes``)."""
    if name in REGISTERED:
        return REGISTERED[name]
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} (a "
                         f"name added by cmkd.data.register exists only in the process that "
                         f"registered it: a job run in a worker process needs the "
                         f"registration in a module that process imports)")
    return importlib.import_module(f"cmkd.data.{DATASETS[name]}")


class _Registered:
    """A registered callable loader as a loader module: ``load`` and its classes."""

    def __init__(self, name: str, load, classes):
        self.NAME, self.load = name, load
        if callable(classes):
            self.classes = classes
        else:
            self.CLASSES = classes
        self.PARAM = None       # no root parameter in a grid (see register)

    def __repr__(self) -> str:
        return f"<dataset {self.NAME!r} registered with loader {self.load!r}>"


def register(name: str, loader, *, classes=None, spec=None) -> None:
    """Add ``loader`` under ``name`` in this process: ``load(name, root, split, **options)``,
    jobs (:class:`cmkd.jobs.Job`, whose options are checked against its signature) and, with a
    ``spec``, notebook 06's grid accept it.

    Parameters
    ----------
    name : a new name (a built-in one cannot be replaced; registering a name again replaces
        its earlier registration).
    loader : a callable ``load(root, split, **options)`` returning a dataset whose items are
        dicts of modality tensors plus 'label' (an :class:`~cmkd.data.arrays.ArrayDataset`, for
        instance), or a module (any object) with such a ``load`` (and optionally ``CLASSES``).
    classes : the number of classes (or the class names), or a callable ``classes(root)``
        giving it; default: the module's ``CLASSES``.  Needed by grids (:func:`classes`).
    spec : a :class:`cmkd.data.specs.DataSpec` (its two modalities, batch keys and models), so
        that grids (:class:`cmkd.jobs.builders.Builder`, notebook 06's ``datasets``) can build
        its teacher and student jobs.  A registered dataset has no root parameter in a grid:
        its ``root`` there is None (give the loader what it reads otherwise, e.g. through the
        spec's fixed ``options``).

    A registration lives in this process only.  The jobs run by a worker process
    (:class:`cmkd.jobs.ProcessExecutor`, spawned) do not know the name unless the worker
    imports a module that registers it: keep the ``register`` call in an importable module of
    your own, imported where the jobs are built, and make sure the workers import it too (or
    run the jobs serially, the default).  Otherwise the worker stops with "unknown dataset".
    The job cache knows a registered dataset by its name, its options and the source file of
    the loader's module (a changed loader reruns its jobs, :mod:`cmkd.jobs.keys`), not by the
    files it reads without a root: after changing those, rerun with ``--refresh-jobs``
    (``run_jobs(..., refresh=True)``) or register it under another name.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a dataset name must be an identifier string, got {name!r}")
    if name in DATASETS and name not in REGISTERED:
        raise ValueError(f"dataset {name!r} is built in; register yours under another name")
    load = loader if inspect.isfunction(loader) or not hasattr(loader, "load") else loader.load
    if not callable(load):
        raise TypeError(f"dataset {name!r}: loader must be a callable load(root, split, "
                        f"**options) or a module with one, got {loader!r}")
    try:
        params = list(inspect.signature(load).parameters.values())
    except (TypeError, ValueError):
        params = None
    if params is not None:
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY,
                                                      p.POSITIONAL_OR_KEYWORD)]
        if len(positional) < 2 and not any(p.kind is p.VAR_POSITIONAL for p in params):
            raise TypeError(f"dataset {name!r}: the loader must take (root, split, "
                            f"**options), got the signature {inspect.signature(load)}")
    if classes is not None and not callable(classes):
        count = classes if isinstance(classes, int) else len(classes)
        if isinstance(classes, bool) or count < 1:
            raise ValueError(f"dataset {name!r}: classes must be a count >= 1, class names or "
                             f"a callable classes(root), got {classes!r}")
    if spec is not None:
        from cmkd.data.specs import DataSpec

        if not isinstance(spec, DataSpec):
            raise TypeError(f"dataset {name!r}: spec must be a cmkd.data.specs.DataSpec, got "
                            f"{type(spec).__name__}")
    if classes is None and load is not loader:
        own = getattr(loader, "classes", None)
        classes = own if callable(own) else getattr(loader, "CLASSES", None)
    entry = _Registered(name, load, classes)
    from cmkd.data import specs

    REGISTERED[name] = entry
    DATASETS[name] = entry
    if spec is not None:
        specs.SPECS[name] = spec
    else:
        specs.SPECS.pop(name, None)


def unregister(name: str) -> None:
    """Remove a name added by :func:`register` (and its spec)."""
    from cmkd.data import specs

    if name not in REGISTERED:
        raise ValueError(f"dataset {name!r} was not added by register")
    del REGISTERED[name], DATASETS[name]
    specs.SPECS.pop(name, None)


def load(name: str, root=None, split: str = "train", **options):
    """Open a split of a registered dataset.

    Parameters
    ----------
    name : a key of :data:`DATASETS`.
    root : folder of a real dataset (its layout: ``module(name).LAYOUT``); ignored for embedded.
    split : 'train', 'val' or 'test'.
    options : the dataset's preprocessing parameters (see its module's ``load``).

    Raises ValueError naming the dataset, the unknown option(s) and the options it accepts when
    ``options`` holds a name its ``load`` does not take.
    """
    mod = module(name)
    check_options(name, mod.load, options)
    return mod.load(root, split, **options)


def classes(name: str, root=None) -> int:
    """The number of classes of a registered dataset: its module's ``classes(root)`` where the
    count depends on the data (``pairs``: the file ``root``), else its ``CLASSES`` (a count or
    the class names; the MVD data's count is an option)."""
    mod = module(name)
    count = getattr(mod, "classes", None)
    if callable(count):
        return int(count(root))
    value = getattr(mod, "CLASSES", None)
    if value is None:
        raise ValueError(f"dataset {name!r} has no fixed number of classes")
    return value if isinstance(value, int) else len(value)


def option_names(name: str) -> tuple[str, ...]:
    """The options of a dataset's ``load`` (its keyword parameters after root and split)."""
    return _option_names(module(name).load)


def _option_names(load) -> tuple[str, ...]:
    params = list(inspect.signature(load).parameters.values())[2:]       # after root, split
    return tuple(p.name for p in params
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def check_options(name: str, load, given) -> None:
    """ValueError when ``given`` (option names) holds one that ``load`` does not accept."""
    params = inspect.signature(load).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = _option_names(load)
    unknown = [k for k in given if k not in accepted]
    if unknown:
        near = difflib.get_close_matches(unknown[0], accepted, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        which = "option" if len(unknown) == 1 else "options"
        raise ValueError(f"dataset {name!r} has no {which} {', '.join(map(repr, unknown))}"
                         f"{hint}; its options are: {', '.join(accepted) or '(none)'}")


def status(root) -> list[dict]:
    """Per real dataset: name, folder (root / its usual folder name), status, problems.

    Raises FileNotFoundError when ``root`` does not exist and NotADirectoryError when it is not a
    folder (rather than reporting every dataset as missing).
    """
    path = Path(root)
    if not path.exists():
        raise FileNotFoundError(f"datasets root {root} does not exist; expected a folder holding "
                                "the datasets under their usual folder names")
    if not path.is_dir():
        raise NotADirectoryError(f"datasets root {root} is not a folder; expected a folder "
                                 "holding the datasets under their usual folder names")
    rows = []
    for name in REAL:
        mod = module(name)
        folder = Path(root) / mod.DIRNAME
        problems = mod.check(folder)
        from cmkd.data.files import status as classify

        rows.append({"name": name, "param": mod.PARAM, "folder": str(folder),
                     "status": classify(folder, problems), "problems": problems})
    return rows
