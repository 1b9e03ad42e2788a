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
    "avmnist": "avmnist",
    "ravdess": "ravdess",
    "cremad": "cremad",
    "ave": "ave",
    "vggsound": "vggsound",
    "nyudv2": "nyudv2",              # SA-Gate / DFormer layout
    "nyudv2_cen": "nyudv2_cen",      # CEN layout
    "mmimdb": "mmimdb",
    "crisismmd": "crisismmd",
}
EMBEDDED = ("mvd", "avdigits", "rgbd_scenes", "mfeat")
REAL = tuple(n for n in DATASETS if n not in EMBEDDED)


def module(name: str):
    """The loader module of a registered dataset."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return importlib.import_module(f"cmkd.data.{DATASETS[name]}")


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


def classes(name: str) -> int:
    """The number of classes of a registered dataset (its module's ``CLASSES``: a count or the
    class names; the MVD data's count is an option)."""
    value = getattr(module(name), "CLASSES", None)
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
