"""How a paired dataset enters a crossmodal grid: its two modalities and their batch keys, the
papers' model for each modality, the loader options a grid sets, and the check (before any
compute) that its folder and encoders are usable.

A grid (a notebook's job grid, :mod:`cmkd.jobs.builders`) names datasets and reads their
settings from its params: the root folder of a real dataset from the parameter its loader names
(``cmkd.data.<name>.PARAM``, e.g. ``cremad_root``), other loader options from the parameters in
:attr:`DataSpec.params`.  Directions follow C2KD's columns: ``a2v`` is the first modality
(audio; CrisisMMD: text; mfeat: its first view; pairs: ``a``) teaching the second (visual;
image; the second view; ``b``), ``v2a`` the reverse.

Your own data: ``pairs`` (one file, the parameter ``pairs_root``) has the spec
:func:`pairs_spec`, whose models are chosen from the file's array shapes (:func:`pairs_model`);
a dataset added by :func:`cmkd.data.register` with a ``spec`` is added to :data:`SPECS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: direction -> (teacher, student) as positions in a spec's ``modalities``
DIRECTIONS = {"a2v": (0, 1), "v2a": (1, 0)}


@dataclass(frozen=True)
class DataSpec:
    """One paired dataset as a grid uses it.

    modalities : (first, second): the teacher and the student of 'a2v' (the reverse: 'v2a').
    keys : modality -> batch key of the dataset's items.
    models : modality -> (registry model, options): the papers' network for that modality
        (``classes`` is added from the dataset).
    options : loader options fixed for this use.
    params : loader option -> the grid parameter that sets it (e.g. ``image_size``).
    encoders : the loader options of ``params`` that are import paths of the user's encoders
        (checked by :func:`preflight`).
    dims : modality -> the grid parameter giving the model's ``in_features`` (an encoder's
        feature size).
    from_data : for data whose models depend on what is read (pairs: the file's shapes), a
        callable ``(modality, root, loader options) -> (registry model, options)`` used in
        place of ``models`` (which then holds the model of vector data, for reference).
    """

    modalities: tuple[str, str]
    keys: dict
    models: dict
    options: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    encoders: tuple = ()
    dims: dict = field(default_factory=dict)
    from_data: Any = None


_AV_RESNET = {"audio": ("resnet18", {"in_channels": 1})}
#: hidden layers of the MLP on each mfeat view (as CrisisMMD's MLPs on encoder features)
MFEAT_HIDDEN = (256, 256)
#: the views the mfeat spec pairs (first teaches second in 'a2v'); see :func:`mfeat_spec`
MFEAT_VIEWS = ("fou", "kar")
#: feature count of each mfeat view (:data:`cmkd.data.mfeat.VIEWS`, repeated here so that this
#: module imports no dataset; a test checks they agree)
MFEAT_DIMS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}


def mfeat_spec(views: tuple[str, str] = MFEAT_VIEWS) -> DataSpec:
    """The spec of two mfeat views: each view is a modality of its own name, read by an MLP
    (``mlp``, :data:`MFEAT_HIDDEN`) on its features; the loader is told the pair (``views``).

    ``SPECS['mfeat']`` is the pair :data:`MFEAT_VIEWS`.  A spec's modalities are fixed, so a grid
    parameter cannot choose the views; to run another pair, set ``SPECS['mfeat'] =
    mfeat_spec((teacher_view, student_view))`` in the process that builds the grid, before
    building it (the jobs carry the views, the MLPs' input sizes and the batch keys, so their
    keys differ from the default pair's and the cache keeps both)."""
    first, second = views
    for v in views:
        if v not in MFEAT_DIMS:
            raise ValueError(f"unknown mfeat view {v!r}; choose from {', '.join(MFEAT_DIMS)}")
    if first == second:
        raise ValueError(f"an mfeat pair needs two distinct views, got {views}")
    return DataSpec((first, second), {v: v for v in views},
                    {v: ("mlp", {"modality": v, "in_features": MFEAT_DIMS[v],
                                 "hidden": MFEAT_HIDDEN}) for v in views},
                    {"views": (first, second)})


#: hidden layers of the MLP on a vector modality of a pairs file (as mfeat's)
PAIRS_HIDDEN = (256, 256)
#: the registry's CNN for an image or spectrogram modality of a pairs file: any channels, any
#: sides >= 8 (three conv blocks with max-pooling, a global average pool, an MLP head)
PAIRS_CNN = "audio_cnn3"


def pairs_model(modality: str, root, options=None) -> tuple[str, dict]:
    """(registry model, options) of ``modality`` ('a' or 'b') of the pairs file ``root``:
    ``mlp`` (:data:`PAIRS_HIDDEN`) with the file's feature count for (N, d) vectors,
    :data:`PAIRS_CNN` with its channels for (N, C, H, W) images or spectrograms (ValueError for
    sides below 8: flatten such images to vectors)."""
    from cmkd.data import pairs

    shape = pairs.shapes(root)[modality]
    if len(shape) == 1:
        return "mlp", {"modality": modality, "in_features": shape[0], "hidden": PAIRS_HIDDEN}
    c, h, w = shape
    if min(h, w) < 8:
        raise ValueError(f"dataset 'pairs': modality {modality!r} of {root} holds {c} x {h} x "
                         f"{w} images; the grid's CNN ({PAIRS_CNN}) needs sides >= 8: store "
                         f"them as vectors ({modality}.reshape(len({modality}), -1)) to train "
                         f"an MLP")
    return PAIRS_CNN, {"modality": modality, "in_channels": c}


def pairs_spec() -> DataSpec:
    """The spec of a pairs file: modalities ``a`` and ``b`` (batch keys of the same names;
    'a2v': a teaches b, 'v2a': b teaches a), models chosen from the file by
    :func:`pairs_model` (``models`` holds the MLP of vectors, without its input size)."""
    return DataSpec(("a", "b"), {"a": "a", "b": "b"},
                    {m: ("mlp", {"modality": m, "hidden": PAIRS_HIDDEN}) for m in ("a", "b")},
                    from_data=pairs_model)


SPECS: dict[str, DataSpec] = {
    "avdigits": DataSpec(("audio", "visual"), {"audio": "audio", "visual": "image"},
                         {"audio": ("avdigits_cnn", {"modality": "audio"}),
                          "visual": ("avdigits_cnn", {"modality": "image"})}),
    "cremad": DataSpec(("audio", "visual"), {"audio": "audio", "visual": "image"},
                       {**_AV_RESNET, "visual": ("resnet18", {"frames": 1})}, {"frames": 1},
                       {"image_size": "image_size"}),
    "ave": DataSpec(("audio", "visual"), {"audio": "audio", "visual": "image"},
                    {**_AV_RESNET, "visual": ("resnet18", {"frames": 1})}, {"frames": 1},
                    {"image_size": "image_size"}),
    "vggsound": DataSpec(("audio", "visual"), {"audio": "audio", "visual": "image"},
                         {**_AV_RESNET, "visual": ("resnet18", {"frames": 3})}, {"frames": 3},
                         {"image_size": "image_size"}),
    "crisismmd": DataSpec(("text", "image"), {"text": "text", "image": "image"},
                          {"text": ("mlp", {"modality": "text", "hidden": (256, 256)}),
                           "image": ("mlp", {"modality": "image", "hidden": (256, 256)})},
                          params={"image_size": "image_size",
                                  "text_encoder": "crisismmd_text_encoder",
                                  "image_encoder": "crisismmd_image_encoder"},
                          encoders=("text_encoder", "image_encoder"),
                          dims={"text": "crisismmd_text_dim", "image": "crisismmd_image_dim"}),
    # MFH B.1's networks: LeNet-5 on the images, the 3-layer audio CNN (its student) on the
    # spectrograms (its audio teacher and the fusion teacher's audio branch are deeper; a grid
    # names them, :class:`cmkd.jobs.builders.Builder`'s ``model`` / ``encoders``)
    "avmnist_mini": DataSpec(("audio", "visual"), {"audio": "audio", "visual": "image"},
                             {"audio": ("audio_cnn3", {}), "visual": ("lenet5", {})},
                             params={"speakers": "speakers", "per_class": "per_class"}),
    "avmnist": DataSpec(("audio", "visual"), {"audio": "audio", "visual": "image"},
                        {"audio": ("audio_cnn3", {}), "visual": ("lenet5", {})},
                        params={"n_valid": "avmnist_n_valid"}),
    # MFH B.4's RAVDESS networks are 3-layer CNNs with 3 fully connected layers (Xue et al.
    # 2021); the registry's 3-block CNN with its MLP head stands for both (images: 3 channels)
    "ravdess": DataSpec(("audio", "visual"), {"audio": "audio", "visual": "image"},
                        {"audio": ("audio_cnn3", {}),
                         "visual": ("audio_cnn3", {"in_channels": 3, "modality": "image"})},
                        params={"image_size": "image_size"}),
    "mfeat": mfeat_spec(),
    "pairs": pairs_spec(),
}


def spec(dataset: str) -> DataSpec:
    """The spec of ``dataset`` (a ValueError naming the known ones otherwise)."""
    if dataset not in SPECS:
        raise ValueError(f"dataset {dataset!r} has no pairing spec; known: {', '.join(SPECS)}")
    return SPECS[dataset]


def root_param(dataset: str) -> str | None:
    """The parameter naming the folder of a real dataset (its loader's ``PARAM``), or None."""
    from cmkd import data

    return getattr(data.module(dataset), "PARAM", None)


def modalities(dataset: str, direction: str) -> tuple[str, str]:
    """(teacher, student) modality of ``direction`` on ``dataset`` (crisismmd a2v: text,
    image)."""
    pair = spec(dataset).modalities
    t, s = DIRECTIONS[direction]
    return pair[t], pair[s]


def resolve_root(root: str) -> Path:
    """A root as given, '~' expanded; a relative root is relative to the project folder."""
    from cmkd.reporting import repo_root

    path = Path(root).expanduser()
    return path if path.is_absolute() else repo_root() / path


def root(dataset: str, params: Mapping[str, Any]) -> str | None:
    """The folder of ``dataset`` from a grid's params (None for embedded and synthetic sets)."""
    param = root_param(dataset)
    return None if param is None else str(resolve_root(params[param]))


def loader_options(dataset: str, params: Mapping[str, Any]) -> dict:
    """The loader options of ``dataset`` in a grid: the spec's fixed ones and those its params
    set (an option whose parameter the grid lacks keeps the loader's default)."""
    s = spec(dataset)
    return {**s.options, **{option: params[param] for option, param in s.params.items()
                            if param in params}}


def model(dataset: str, modality: str, params: Mapping[str, Any]) -> tuple[str, dict]:
    """(registry model, options) of ``modality`` on ``dataset``, with its ``classes`` (and its
    ``in_features`` where the params give an encoder's size; for a spec with ``from_data``,
    the model and the classes its data give)."""
    from cmkd import data

    s = spec(dataset)
    if s.from_data is None:
        name, opts = s.models[modality]
        count = data.classes(dataset)
    else:
        where = root(dataset, params)
        name, opts = s.from_data(modality, where, loader_options(dataset, params))
        count = data.classes(dataset, where)
    opts = dict(opts, classes=count)
    if modality in s.dims:
        opts["in_features"] = params[s.dims[modality]]
    return name, opts


def preflight(datasets, params: Mapping[str, Any]) -> None:
    """Check, before any compute, that every real dataset of ``datasets`` is found where the
    params say (the loader's own checks of lists and folders, no item read) and that its encoder
    import paths are set, well formed, not refused and found on sys.path
    (:func:`cmkd.data.crisismmd.check_encoder`).  The encoders' modules are not imported: that
    runs them, which is left to the jobs that open the data (:func:`user_code` lists them).
    Every problem is listed at once in one ParamError."""
    problems: list[tuple[str, str]] = []
    for name in datasets:
        problems += _encoder_problems(name, params)
        problems += _root_problems(name, params)
    if len(problems) == 1:
        from cmkd.params import ParamError

        raise ParamError(*problems[0])
    if problems:
        from cmkd.params import ParamError

        raise ParamError(None, f"{len(problems)} problems:\n" + "\n".join(
            f"  parameter '{p}': {m}" for p, m in problems))


def user_code(datasets, params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(parameter, import path) of every encoder of ``datasets`` that the params set: the code
    of the user's that the jobs will import and run when they open the data."""
    out = []
    for name in datasets:
        s = spec(name)
        out += [(s.params[o], params[s.params[o]]) for o in s.encoders if params[s.params[o]]]
    return out


def _encoder_problems(name: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
    from cmkd.data.crisismmd import check_encoder

    s, out = spec(name), []
    for option in s.encoders:
        param = s.params[option]
        path = params[param]
        if not path:
            out.append((param, f"dataset {name!r} is selected but {param} is empty; set it to "
                               f"the import path 'package.module:callable' of "
                               f"{'an' if option[0] in 'aeiou' else 'a'} "
                               f"{option.replace('_', ' ')} of your own that loads local "
                               f"weights (nothing is downloaded; see cmkd.data.{name})"))
            continue
        try:
            check_encoder(path, option)
        except ValueError as err:
            out.append((param, str(err)))
    return out


def _root_problems(name: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
    from cmkd import data
    from cmkd.data.files import DatasetError

    param = root_param(name)
    if param is None:
        return []
    if not params[param]:
        layout = getattr(data.module(name), "LAYOUT", "").strip()
        what = "path of its file" if name in data.FILES else "folder holding it"
        return [(param, f"dataset {name!r} is selected but {param} is empty; set it to the "
                        f"{what}. Expected layout:\n{layout}")]
    # the loader's own checks (lists, folders), with its tolerance; no item read, so no encoder
    # (they are checked by _encoder_problems: a bad one must not stop this check with its error)
    options = {k: None if k in spec(name).encoders else v
               for k, v in loader_options(name, params).items()}
    try:
        data.load(name, resolve_root(params[param]), "train", **options)
    except DatasetError as err:
        return [(param, str(err))]
    return []
