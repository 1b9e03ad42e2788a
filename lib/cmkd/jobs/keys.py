"""What a job's cache key covers: the code it runs, the data it reads, the environment.

:attr:`cmkd.jobs.Job.key` is the sha256 of the job's identity (its fields, the teacher by its
key; ``workers`` left out, ``device`` as its type) and of :func:`dependencies`:

- **code** (:func:`code_files`): the source of the modules the job runs, found statically.  The
  roots are the runner (:data:`ROOTS`: the job runner, the training loop, the method and model
  bases and registries) and the job's own parts, each the module its registry resolves the
  name to, in whatever package it lives: the method's class, the model's factory (and its
  stacked form for a stack), the dataset's loader (a built-in module of :mod:`cmkd.data` or the
  function given to :func:`cmkd.data.register`) and every dataset option that is an import path
  ``'module:callable'`` (CrisisMMD's encoders).  From the roots, the ``import`` statements of
  each file (those inside functions too) are followed into the cmkd package; ``from P import
  name`` of a name ``P`` re-exports counts the module that defines it.  Two approximations: the
  package ``__init__`` of a registry (:data:`REGISTRIES`) counts, but its imports of its own
  parts do not (the methods, models, losses and loaders a job does not name); a user module
  counts as its file, with its imports of cmkd followed but not those of other user modules.
  Modules that do not change what a job computes (:data:`NOT_RUN`: the cache's file handling,
  the executors, parameter validation, reporting, the notebooks' orchestration) are left out.
  The embedded data files of a loader (``cmkd/data/embedded/<loader>.*``) count with it.
- **data** (:func:`data_fingerprint`): for a job with a ``data_root`` (a real dataset's folder,
  or the file of ``pairs``), the sha256 of the relative paths and sha256 of its files (hidden
  files excluded).  It is computed once per root and remembered on disk
  (``<cache>/fingerprints/``, :func:`fingerprint_store`): a file whose size and mtime did not
  change is not read again.
- **environment** (:func:`environment`): torch's version and the pins of
  :data:`COMPUTE_PACKAGES` in the checkout's ``requirements.lock`` (another torch, numpy or
  CUDA library: every job runs again; a new pytest or jupyter: none).  The device *type* is in
  the job's identity: ``device: auto`` and ``cpu`` name the same job on a machine without a
  GPU, ``cuda`` and ``cuda:1`` the same job on one with.

Everything is computed once per process (a running process executes the code it imported and
reads each root once); :func:`forget` starts again (tests, or a long-lived kernel after an
edit).  The table of edits and the jobs they rerun is in docs/cache.md.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.machinery
import inspect
import json
import os
import re
import secrets
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from cmkd.jobs.cache import sha256_file

#: the modules every job runs (with what they import)
ROOTS = ("cmkd.jobs.run", "cmkd.jobs.job", "cmkd.engine", "cmkd.runtime",
         "cmkd.models.registry", "cmkd.models.stack", "cmkd.models.batched", "cmkd.methods.base",
         "cmkd.data.arrays")

#: packages whose ``__init__`` imports all of their parts (to register them or re-export
#: them): a job depends on the parts it names, not on all of them
REGISTRIES = ("cmkd.methods", "cmkd.models", "cmkd.distill", "cmkd.data")

#: modules (and packages, with a trailing dot) whose edits keep every job's results: the
#: cache's file handling, the executors, the key itself, parameter validation and messages,
#: reporting, the notebooks' orchestration and grids, the published numbers, benchmarks
NOT_RUN = ("cmkd.jobs.cache", "cmkd.jobs.executors", "cmkd.jobs.keys", "cmkd.jobs.builders",
           "cmkd.params", "cmkd.text", "cmkd.cli", "cmkd.reporting", "cmkd.reproduce",
           "cmkd.provenance", "cmkd.verdicts", "cmkd.data.specs", "cmkd.data.build_avdigits",
           "cmkd.data.build_mfeat", "cmkd.experiments.", "cmkd.reference.", "cmkd.bench.")

#: the packages of requirements.lock whose version can change a job's numbers
COMPUTE_PACKAGES = ("torch", "torchvision", "torchaudio", "torchmetrics", "numpy", "scipy",
                    "scikit-learn", "pandas", "pillow", "soundfile", "h5py", "triton",
                    "threadpoolctl")
#: ... and those whose name starts so (the CUDA libraries)
COMPUTE_PREFIXES = ("nvidia-",)

LOCK_FILE = "requirements.lock"
FINGERPRINTS = "fingerprints"
#: a fingerprint that reads more than this many bytes shows a progress bar
PROGRESS_BYTES = 256 * 2**20

_PACKAGE = Path(__file__).resolve().parents[1]          # lib/cmkd
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


# ----------------------------------------------------------------------------- files
@functools.cache
def file_sha256(path: str) -> str:
    """sha256 of a file's bytes (:func:`cmkd.jobs.cache.sha256_file`, once per process)."""
    return sha256_file(Path(path))


def _not_run(module: str) -> bool:
    return any(module == n or (n.endswith(".") and module.startswith(n)) for n in NOT_RUN)


def _ours(module: str) -> bool:
    return module == "cmkd" or module.startswith("cmkd.")


def _cmkd_file(module: str, package: Path) -> Path | None:
    """The file of cmkd module ``module`` under package folder ``package``, or None."""
    parts = module.split(".")[1:]
    if not parts:
        return package / "__init__.py"
    rel = Path(*parts[:-1])
    for path in (package / rel / f"{parts[-1]}.py", package / rel / parts[-1] / "__init__.py"):
        if path.is_file():
            return path
    return None


def find_origin(module: str) -> Path | None:
    """The source file of module ``module``, found without importing it or its parent
    packages (the import system's path finder, each package's folder searched for the next
    part; a module already imported: its ``__file__``); None when it has none (a builtin) or
    is not found."""
    loaded = sys.modules.get(module)
    if loaded is not None:
        origin = getattr(loaded, "__file__", None)
        return Path(origin) if origin else None
    parts = module.split(".")
    try:
        spec = importlib.machinery.PathFinder.find_spec(parts[0])
        for k in range(1, len(parts)):
            if spec is None or spec.submodule_search_locations is None:
                return None
            full = ".".join(parts[:k + 1])
            if full in sys.modules:
                spec = sys.modules[full].__spec__
            else:
                spec = importlib.machinery.PathFinder.find_spec(
                    full, list(spec.submodule_search_locations))
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return None
    return Path(spec.origin)


def _file(module: str, package: Path) -> Path | None:
    return _cmkd_file(module, package) if _ours(module) else find_origin(module)


@functools.cache
def _imports(path: str, module: str, is_package: bool) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The ``(module, names)`` of every import statement in file ``path`` (of module
    ``module``), relative imports resolved; ``names`` empty for ``import x``."""
    try:
        tree = ast.parse(Path(path).read_bytes(), filename=path)
    except (SyntaxError, ValueError):
        return ()
    base = module.split(".") if is_package else module.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[:len(base) - node.level + 1] if node.level > 1 else base
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, tuple(a.name for a in node.names)))
    return tuple(out)


def _defining_module(package_name: str, name: str) -> str | None:
    """The module that defines what cmkd package ``package_name`` exports as ``name``."""
    try:
        obj = getattr(importlib.import_module(package_name), name, None)
    except ImportError:
        return None
    owner = getattr(obj, "__module__", None)
    return owner if isinstance(owner, str) and owner != package_name else None


def _followed(importer: str, target: str, names: tuple[str, ...], package: Path) -> list[str]:
    """The cmkd modules an import statement of ``importer`` brings in."""
    if not _ours(target):
        return []
    out = []
    if not names:
        out.append(target)
    target_file = _cmkd_file(target, package)
    for name in names:
        sub = f"{target}.{name}"
        if _cmkd_file(sub, package) is not None:
            out.append(sub)
            continue
        out.append(target)
        if target_file is not None and target_file.name == "__init__.py":
            owner = _defining_module(target, name)
            if owner is not None and _ours(owner):
                out.append(owner)
    if importer in REGISTRIES:  # a registry's own parts are not followed from its __init__
        out = [m for m in out if not m.startswith(importer + ".")]
    return out


def code_files(modules: Iterable[str], package: Path | None = None) -> dict[str, str]:
    """``{label: sha256}`` of the files of ``modules`` and of what they import (see the module
    docstring): cmkd files labelled by their path in the package, others by their module name.
    ``package``: the cmkd package folder to read (default: the imported one)."""
    package = Path(package) if package is not None else _PACKAGE
    seen: set[str] = set()
    out: dict[str, str] = {}
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen or _not_run(module):
            continue
        seen.add(module)
        if _ours(module):
            parts = module.split(".")
            todo += [".".join(parts[:k]) for k in range(1, len(parts))]   # parents run too
        path = _file(module, package)
        if path is None or path.suffix != ".py":
            continue
        label = (path.relative_to(package).as_posix() if _ours(module)
                 else f"{module} ({path.name})")
        out[label] = file_sha256(str(path))
        for target, names in _imports(str(path), module, path.name == "__init__.py"):
            todo += _followed(module, target, names, package)
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------- a job's parts
def _module_of(obj) -> str | None:
    obj = inspect.unwrap(obj) if callable(obj) else obj
    name = getattr(obj, "__module__", None)
    return name if isinstance(name, str) else None


def import_paths(options: Mapping) -> list[str]:
    """The modules of the option values that are import paths ``'module:callable'`` (found on
    sys.path without importing them)."""
    out = []
    for value in options.values():
        if isinstance(value, str) and _IMPORT_PATH.match(value):
            module = value.split(":", 1)[0]
            if find_origin(module) is not None:
                out.append(module)
    return out


def parts(job) -> list[str]:
    """The modules a job names through its registries (method, model, dataset loader, import
    paths among the dataset options), in whatever package they live."""
    from cmkd import data, methods
    from cmkd.models import registry

    out = [_module_of(methods.get(job.method)), _module_of(registry._factory(job.model))]
    if job.stacked and job.model in registry._STACKED:
        out.append(_module_of(registry._STACKED[job.model]))
    loader = data.module(job.dataset)
    out.append(loader.__name__ if inspect.ismodule(loader) else _module_of(loader.load))
    for run in [None, *range(len(job.runs))]:
        out += import_paths(job.run_dataset_options(run))
    return sorted({m for m in out if m})


def embedded_files(job, package: Path | None = None) -> dict[str, str]:
    """``{label: sha256}`` of the embedded data files of the job's loader
    (``cmkd/data/embedded/<loader module>.*``)."""
    from cmkd import data

    package = Path(package) if package is not None else _PACKAGE
    loader = data.module(job.dataset)
    if not inspect.ismodule(loader) or not loader.__name__.startswith("cmkd.data."):
        return {}
    stem = loader.__name__.rsplit(".", 1)[1]
    folder = package / "data" / "embedded"
    found = sorted(folder.glob(f"{stem}.*")) if folder.is_dir() else []
    return {p.relative_to(package).as_posix(): file_sha256(str(p)) for p in found if p.is_file()}


def job_code(job, package: Path | None = None) -> dict[str, str]:
    """``{label: sha256}`` of the code a job runs and the embedded data it reads."""
    return {**code_files([*ROOTS, *parts(job)], package), **embedded_files(job, package)}


def code_hash(job, package: Path | None = None) -> str:
    """sha256 of :func:`job_code` (the ``source`` of a job's result rows)."""
    return _digest(job_code(job, package))


def _digest(value) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- data
_FINGERPRINTS: dict[str, str] = {}


def fingerprint_store() -> Path | None:
    """Where fingerprints are remembered: ``<cache>/fingerprints`` of the default cache
    (:func:`cmkd.jobs.cache.cache_dir`); None when there is no usable cache folder."""
    from cmkd.jobs import cache

    try:
        return cache.cache_dir() / FINGERPRINTS
    except (OSError, ValueError):
        return None


def _walk(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    out = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(folder) / f for f in files if not f.startswith(".")]
    return sorted(out)


def data_fingerprint(root, store: Path | None = None) -> str:
    """sha256 of the files under dataset folder ``root`` (or of the file ``root``): their
    relative paths and contents, hidden files excluded; 'absent' when ``root`` does not exist.

    Once per process per root.  Each file's (size, mtime, sha256) is remembered in ``store``
    (default :func:`fingerprint_store`), so that a later process reads only the files whose
    size or mtime changed."""
    root = Path(root).expanduser().resolve()
    known = _FINGERPRINTS.get(str(root))
    if known is not None:
        return known
    if not root.exists():
        return "absent"
    store = fingerprint_store() if store is None else Path(store)
    memo_path = None if store is None else (
        store / f"{hashlib.sha256(str(root).encode()).hexdigest()[:32]}.json")
    memo = {}
    if memo_path is not None:
        try:
            saved = json.loads(memo_path.read_text())
            if isinstance(saved, dict) and saved.get("root") == str(root):
                memo = saved.get("files", {}) if isinstance(saved.get("files"), dict) else {}
        except (OSError, ValueError):
            memo = {}
    files, todo = {}, []
    for path in _walk(root):
        rel = path.name if root.is_file() else path.relative_to(root).as_posix()
        try:
            st = path.stat()
        except OSError:
            continue  # a dangling link
        old = memo.get(rel)
        if (isinstance(old, list) and len(old) == 3 and old[0] == st.st_size
                and old[1] == st.st_mtime_ns):
            files[rel] = old
        else:
            todo.append((rel, path, st))
    changed = bool(todo)
    total = sum(st.st_size for _, _, st in todo)
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, desc=f"fingerprint of {root.name}",
              disable=total < PROGRESS_BYTES, file=sys.stderr) as bar:
        for rel, path, st in todo:  # read once; later runs read only what changed
            files[rel] = [st.st_size, st.st_mtime_ns, file_sha256.__wrapped__(str(path))]
            bar.update(st.st_size)
    changed = changed or set(memo) != set(files)
    digest = _digest({rel: v[2] for rel, v in files.items()})
    if memo_path is not None and changed:
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_path.with_name(f".{memo_path.name}.{secrets.token_hex(4)}")
            tmp.write_text(json.dumps({"root": str(root), "files": files}))
            os.replace(tmp, memo_path)
        except OSError:
            pass  # a read-only cache: the fingerprint is computed again next time
    _FINGERPRINTS[str(root)] = digest
    return digest


def job_data(job) -> str | None:
    """The fingerprint of the job's ``data_root``, None for a job without one."""
    return None if job.data_root is None else data_fingerprint(job.data_root)


# ----------------------------------------------------------------------------- environment
def lock_path() -> Path:
    """The requirements.lock of the checkout the package runs from."""
    return _PACKAGE.parents[1] / LOCK_FILE


def _compute_package(name: str) -> bool:
    return name in COMPUTE_PACKAGES or name.startswith(COMPUTE_PREFIXES)


def lock_pins(path: Path | None = None) -> list[str] | None:
    """The ``name==version`` lines of :data:`COMPUTE_PACKAGES` in the lock (markers dropped),
    sorted; None without a lock."""
    path = lock_path() if path is None else Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    pins = set()
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if match:
            name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            if _compute_package(name):
                pins.add(f"{name}=={match.group(2)}")
    return sorted(pins)


@functools.cache
def environment() -> dict:
    """torch's version and the sha256 of :func:`lock_pins` (None without a lock)."""
    import torch

    pins = lock_pins()
    return {"torch": torch.__version__, "lock": None if pins is None else _digest(pins)}


def device_type(preference: str) -> str:
    """The type of the device a ``device`` preference gives here ('auto' resolved: 'cuda',
    'mps' or 'cpu'; 'cuda:1' -> 'cuda')."""
    if preference == "auto":
        from cmkd.runtime import select_device

        return select_device("auto").type
    return preference.split(":", 1)[0]


# ----------------------------------------------------------------------------- together
def dependencies(job) -> dict:
    """What a job's key covers besides its fields: ``code`` (:func:`job_code`), ``data``
    (:func:`job_data`) and ``environment`` (:func:`environment`)."""
    return {"code": job_code(job), "data": job_data(job), "environment": environment()}


def forget() -> None:
    """Forget what this process computed (file hashes, imports, fingerprints, the
    environment): the next keys see the files as they are now.  Job objects keep the key they
    computed; build new ones."""
    file_sha256.cache_clear()
    _imports.cache_clear()
    environment.cache_clear()
    _FINGERPRINTS.clear()
