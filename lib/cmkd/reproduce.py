"""`cmkd reproduce`: run the numbered notebooks with papermill on a profile and write REPORT.md.

A profile is any folder params/<profile>/ (one YAML file per notebook); ``--set NN.param=value``
overrides one parameter of one notebook for one run.  For each selected notebook: validate its
parameters (all of them, before any compute), skip it when its inputs (notebook, params file and
overrides, the cmkd package with its data files, requirements.lock) are unchanged since its last
successful run and its published files still have the sha256 recorded when they were published,
else execute it with papermill into reports/<profile>/notebooks/.  A failing notebook is reported
by name, cell and failing statement while the others still run; the exit code says whether all
succeeded.  While a notebook runs, its job counts (done / running / failed / cached of the job
runner's current call, and an estimate of the time left) are printed as one line whenever they
change: the job runner keeps them in a small JSON file (:class:`cmkd.jobs.run.Progress`, named by
the environment variable ``CMKD_PROGRESS``) that this process reads while it waits for papermill
(no thread reads the kernel's output, which goes to a log file).  ``--tensorboard`` sets
``CMKD_TENSORBOARD=1`` for the notebooks: every job they train writes TensorBoard event files
under .cache/tb/<job key>/.

A run survives interruption: one reproduce per profile at a time (a lock file); the notebook's
state is invalidated before it starts; its figures, tables and manifest are staged in
reports/<profile>/.staging/<notebook>/ and published only when it finishes, with the run's
provenance (:mod:`cmkd.provenance`), the sha256 of its params file and of every file, and its
overrides; Ctrl-C (or SIGTERM) stops the notebook's process group and keeps the previous
artefacts; leftovers of a killed run are removed by the next one.  Whatever stops a run (the
end, Ctrl-C, a failure, a full disk), REPORT.md is rebuilt from what is published, and a
notebook whose params changed since its artefacts were made, whose last run failed or whose
files were edited is flagged stale there.  ``refresh_notebooks`` (``make notebooks``)
regenerates the stored smoke outputs.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from cmkd.jobs.executors import die_with_parent
from cmkd.jobs.run import PROGRESS_ENV, TENSORBOARD_ENV
from cmkd.params import RESERVED, ParamError, from_mapping
from cmkd.reporting import (
    RUN_FILE,
    STAGING_ENV,
    atomic_write_bytes,
    check_profile_name,
    format_overrides,
    profiles,
    repo_root,
    reports_dir,
    write_report,
)
from cmkd.text import quote

KERNEL = "python3"
#: The folders of reports/<profile>/ that reproduce writes (checked for writing before compute).
WRITTEN = ("figures", "tables", "manifest", "notebooks", ".state")
#: Errors of writing a file that stop a run with one line naming the file (a full disk, a
#: quota, a read-only or unwritable folder, an I/O error).
WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                          errno.EIO, errno.EFBIG})


def discover(root: Path) -> list[str]:
    """Stems of the numbered notebooks, in order."""
    return sorted(p.stem for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def select(available: list[str], only: list[str] | None) -> list[str]:
    """Notebooks matching ``only`` (numbers such as '01' or full stems); all when None."""
    if not only:
        return list(available)
    chosen = []
    for key in only:
        hits = [nb for nb in available if nb == key or nb.split("_", 1)[0] == key.zfill(2)]
        if not hits:
            raise SystemExit(f"cmkd reproduce: no notebook matches --only {key!r}; available: "
                             f"{', '.join(available)}")
        chosen += [h for h in hits if h not in chosen]
    return [nb for nb in available if nb in chosen]


def inputs_hash(root: Path, notebook: str, profile: str, overrides: dict | None = None) -> str:
    """Hash of what a notebook's results depend on: the notebook, its params file and the
    ``--set`` overrides of this run, every file of the cmkd package (code, reference values,
    embedded data) and requirements.lock."""
    h = hashlib.sha256()
    if overrides:
        h.update(b"overrides:" + json.dumps(overrides, sort_keys=True).encode())
    files = [root / "notebooks" / f"{notebook}.ipynb",
             root / "params" / profile / f"{notebook}.yaml", root / "requirements.lock"]
    lib = Path(__file__).resolve().parent
    files += sorted(p for p in lib.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                    and p.suffix not in (".pyc", ".tmp"))
    for path in files:
        h.update((path.relative_to(lib.parent).as_posix() if lib in path.parents
                  else path.name).encode())
        h.update(path.read_bytes() if path.is_file() else b"<missing>")
    return h.hexdigest()


@contextmanager
def _environment(**values: str):
    """Set environment variables (inherited by the kernels started inside), then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _state_path(root: Path, profile: str, notebook: str) -> Path:
    return reports_dir(profile, root) / ".state" / f"{notebook}.json"


def stray_params(root: Path, profile: str, notebooks: list[str]) -> list[str]:
    """params/<profile>/*.yaml files that match no notebook (a typo in a file name would
    otherwise be ignored silently)."""
    return sorted(f"params/{profile}/{p.name}" for p in (root / "params" / profile).glob("*.y*ml")
                  if p.stem not in notebooks)


def dataset_free(root: Path, profile: str, notebooks: list[str]) -> list[str]:
    """The notebooks among ``notebooks`` whose params/<profile> file names no dataset folder (no
    real dataset's root parameter, such as ``cremad_root``, nor ``pairs_root`` set): they run
    without the real datasets.  A params file that cannot be read counts as not free."""
    from cmkd import data
    from cmkd.params import read_yaml

    roots = {getattr(data.module(name), "PARAM", None)
             for name in data.REAL + data.FILES} - {None}
    free = []
    for nb in notebooks:
        try:
            values = read_yaml(root / "params" / profile / f"{nb}.yaml")
        except ParamError:
            continue
        if not any(values.get(param) for param in roots):
            free.append(nb)
    return free


def _dataset_free_hint(root: Path, profile: str, failed: list[str]) -> str:
    """Lines saying which notebooks can run while those of ``failed`` wait for their datasets,
    and the command that runs them ('' when none can)."""
    free = [nb for nb in dataset_free(root, profile, discover(root)) if nb not in failed]
    if not free:
        return ""
    numbers = " ".join(nb.split("_", 1)[0] for nb in free)
    return (f"\nThese notebooks read no dataset and can run meanwhile: {', '.join(free)}:\n"
            f"  cmkd reproduce --profile {profile} --only {numbers}")


_SET = re.compile(r"([^.=\s]+)\.([^=\s]+)=(.*)", re.DOTALL)


def parse_overrides(items: list[str] | None, available: list[str]) -> dict[str, dict]:
    """``--set`` values (``NN.param=value``, the notebook by number or name, the value read as
    YAML, as in a params file) as {notebook: {param: value}}; SystemExit naming the bad one."""
    out: dict[str, dict] = {}
    for item in items or []:
        m = _SET.fullmatch(item)
        if not m:
            raise SystemExit(f"cmkd reproduce: --set {item!r}: expected NN.PARAM=VALUE, e.g. "
                             "--set 06.epochs=3")
        key, name, text = m.groups()
        hits = [nb for nb in available if nb == key or nb.split("_", 1)[0] == key.zfill(2)]
        if not hits:
            raise SystemExit(f"cmkd reproduce: --set {item!r}: no notebook matches {key!r}; "
                             f"available: {', '.join(available)}")
        if name in RESERVED:
            raise SystemExit(f"cmkd reproduce: --set {item!r}: '{name}' is chosen by --profile")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            problem = str(err).splitlines()[0]
            raise SystemExit(f"cmkd reproduce: --set {item!r}: the value is not valid YAML "
                             f"({problem})") from None
        for nb in hits:
            if name in out.setdefault(nb, {}):
                raise SystemExit(f"cmkd reproduce: --set gives {nb}'s '{name}' twice; keep one")
            out[nb][name] = value
    return out


def validate_all(root: Path, profile: str, notebooks: list[str],
                 overrides: dict[str, dict] | None = None) -> dict[str, dict]:
    """Read and validate every selected params file, with its notebook's ``--set`` overrides
    applied; returns the values each notebook runs with.

    Raises SystemExit listing every problem; when a notebook's data are not found (its
    preflight), the message ends with the notebooks that need no dataset and how to run them.
    Nothing of the user's is imported here: once every file is valid, the import paths of
    user code the notebooks will run (a Config's ``user_code``, e.g. CrisisMMD's encoders) are
    listed on stderr, before any of it runs.
    """
    from cmkd.experiments import NOTEBOOKS, module_for
    from cmkd.params import read_yaml

    overrides = overrides or {}
    errors, values, no_data, code = [], {}, [], []
    for nb in notebooks:
        rel = f"params/{profile}/{nb}.yaml"
        label = rel + (f" with --set {format_overrides(overrides[nb])}" if overrides.get(nb)
                       else "")
        if nb not in NOTEBOOKS:
            errors.append(f"{rel}: notebook {nb} has no experiment module registered in "
                          "cmkd.experiments.NOTEBOOKS, so its parameters cannot be checked")
            continue
        try:
            merged = dict(read_yaml(root / rel), **overrides.get(nb, {}))
            config = from_mapping(module_for(nb).Config, merged, label)
            preflight = getattr(config, "preflight", None)  # data a notebook reads, if any
            if preflight is not None:
                try:
                    with _environment(CMKD_ROOT=str(root)):
                        preflight()
                except ParamError as err:
                    no_data.append(nb)
                    raise ParamError(err.name, err.message, label) from None
            values[nb] = merged
            user_code = getattr(config, "user_code", None)  # import paths it will run, if any
            code += [f"{rel}: {param} = {quote(path)}" for param, path in
                     (user_code() if user_code is not None else [])]
        except ParamError as err:
            errors.append(str(err))
    if errors:
        hint = _dataset_free_hint(root, profile, no_data) if no_data else ""
        raise SystemExit("cmkd reproduce: invalid parameters, nothing was run:\n  "
                         + "\n  ".join(errors) + hint)
    if code:
        print("cmkd reproduce: these parameters name code of yours, imported and run by the "
              "notebooks' jobs (not yet run: validation only found the modules):\n  "
              + "\n  ".join(code), file=sys.stderr)
    return values


# ----------------------------------------------------------------------------- one run at a time
@contextmanager
def profile_lock(root: Path, profile: str):
    """Hold reports/<profile>/.lock for the run; refuse to start while another process holds it.
    The lock is the kernel's (fcntl), so it is released however the holder ends, SIGKILL too."""
    out = reports_dir(profile, root)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise SystemExit(f"cmkd reproduce: cannot write under {out}: {err.strerror}; "
                         "check the folder's permissions") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise SystemExit(f"cmkd reproduce: another reproduce of profile '{profile}' is "
                             f"running (pid {holder}); wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _check_writable(folder: Path) -> None:
    """One clear line, before any compute, instead of a traceback when reports/<profile>/ (or a
    folder of it that a run writes) cannot be written: a file is created and removed in each."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for sub in (folder, *(folder / name for name in WRITTEN)):
            if not sub.exists():
                continue
            if not sub.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(sub))
            probe = sub / f".write-check-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
    except OSError as err:
        raise SystemExit(f"cmkd reproduce: cannot write under {err.filename or folder}: "
                         f"{err.strerror}; check the folder's permissions") from None


@contextmanager
def _writing(path: Path):
    """An OSError raised inside names ``path`` (a write that fails on a full disk does not)."""
    try:
        yield
    except OSError as err:
        err.filename, err.filename2 = str(path), None
        raise


def _write(path: Path, data: str | bytes) -> None:
    """Atomically write ``data`` to ``path``; an OSError names ``path``."""
    with _writing(path):
        atomic_write_bytes(path, data.encode() if isinstance(data, str) else data)


def _write_error(err: OSError, root: Path) -> str:
    """The one line that says which file could not be written, and why."""
    where = Path(err.filename) if err.filename else None
    if where is not None and root in where.parents:
        where = where.relative_to(root)
    line = f"cannot write {where or '(unknown file)'}: {err.strerror or err}"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        line += ("; free some space and rerun (what was published stays; the notebook being "
                 "published is redone)")
    return line


def remove_leftovers(root: Path, profile: str) -> list[str]:
    """Remove what a killed run may have left: staging folders and temporary notebooks."""
    out = reports_dir(profile, root)
    removed = []
    staging = out / ".staging"
    if staging.exists():
        shutil.rmtree(staging)
        removed.append(staging.relative_to(root).as_posix())
    for tmp in (out / "notebooks").glob(".*.ipynb"):
        tmp.unlink()
        removed.append(tmp.relative_to(root).as_posix())
    return removed


# ----------------------------------------------------------------------------- running one
class Interrupted(Exception):
    """The user stopped the run (SIGINT or SIGTERM) while ``notebook`` was executing."""

    def __init__(self, notebook: str):
        self.notebook = notebook
        super().__init__(notebook)


class NotebookFailed(Exception):
    def __init__(self, description: str):
        self.description = description
        super().__init__(description)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def describe_error_cell(executed: Path) -> str:
    """The failing cell of an executed notebook: its number, the statement that raised (the
    line IPython's traceback marks with an arrow) and the error."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    # papermill adds markdown cells announcing the error; the count is of the notebook's own
    cells = [c for c in nb.cells if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
    for index, cell in enumerate(cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") != "error":
                continue
            where = ""
            for line in out.get("traceback", []):
                for text in _ANSI.sub("", line).splitlines():
                    m = re.match(r"^-*>\s*(\d+)\s(.*)$", text)
                    if m:
                        where = f", line {m.group(1)} `{m.group(2).strip()[:80]}`"
                        break
                if where:
                    break
            if not where:
                first = cell.source.strip().splitlines()[:1]
                where = f" `{first[0][:80]}`" if first else ""
            return f"cell {index}{where}: {out.get('ename')}: {out.get('evalue')}"
    return "no cell recorded an error (see the executed notebook)"


def _run_one(root: Path, profile: str, nb: str, params: dict, staging: Path) -> None:
    """Execute one notebook with papermill in its own process group, artefacts to ``staging``.
    Raises Interrupted on SIGINT / SIGTERM and NotebookFailed when a cell fails."""
    out_dir = reports_dir(profile, root) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    staging.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{nb}.{os.getpid()}.ipynb"
    log = staging.parent / f"{nb}.log"
    params_file = staging.parent / f"{nb}.params.json"
    _write(params_file, json.dumps(dict(params, profile=profile)))
    cmd = [sys.executable, "-m", "papermill", str(root / "notebooks" / f"{nb}.ipynb"), str(tmp),
           "-f", str(params_file), "-k", KERNEL, "--cwd", str(root / "notebooks"),
           "--no-progress-bar", "--no-log-output"]
    progress = staging.parent / f"{nb}.progress.json"
    progress.unlink(missing_ok=True)
    env = dict(os.environ, CMKD_ROOT=str(root), **{STAGING_ENV: str(staging)},
               PYTHONWARNINGS="ignore", **{PROGRESS_ENV: str(progress)})
    # the kernel's output goes to the log only (a relay thread forwarding it made the
    # interruption test hang once on a loaded machine); the job counts come through the
    # progress file, read here between waits
    with open(log, "wb") as log_fh:
        proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True,
                                preexec_fn=die_with_parent)
        try:
            code = _wait(proc, nb, progress)
        except KeyboardInterrupt:
            _stop_group(proc)
            tmp.unlink(missing_ok=True)
            raise Interrupted(nb) from None
    if code != 0:
        failed = out_dir / f"{nb}.failed.ipynb"
        if tmp.exists():
            os.replace(tmp, failed)
            raise NotebookFailed(describe_error_cell(failed))
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise NotebookFailed(f"papermill exited with status {code}: {tail[0][:200]}")
    os.replace(tmp, out_dir / f"{nb}.ipynb")
    stale = out_dir / f"{nb}.failed.ipynb"
    if stale.exists():
        stale.unlink()


#: Seconds between two reads of the progress file while a notebook runs.
POLL_SECONDS = 1.0


def progress_line(nb: str, state: dict) -> str:
    """One line of a notebook's job counts (:class:`cmkd.jobs.run.Progress`'s state)."""
    eta = state.get("eta_seconds")
    left = "" if eta is None else f", about {_duration(eta)} left"
    failed = f", {state['failed']} FAILED" if state.get("failed") else ""
    return (f"  {nb}: jobs {state['done']}/{state['todo']} done, {state['running']} running"
            f"{failed}, {state['cached']} cached (of {state['total']}){left}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _read_progress(path: Path) -> dict | None:
    """The progress file's state, or None (not written yet, or unreadable)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and "done" in state else None


def _wait(proc: subprocess.Popen, nb: str, progress: Path) -> int:
    """Wait for papermill in steps of :data:`POLL_SECONDS`, printing the job counts whenever
    they change (Ctrl-C arrives between steps as KeyboardInterrupt)."""
    from tqdm.auto import tqdm

    shown = None
    while True:
        try:
            return proc.wait(POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        state = _read_progress(progress)
        if state is None:
            continue
        counts = {k: state.get(k) for k in ("total", "cached", "todo", "done", "running",
                                            "failed")}
        if counts != shown:
            shown = counts
            tqdm.write(progress_line(nb, state), file=sys.stdout)
            sys.stdout.flush()


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop papermill and its kernel: SIGTERM to the group, SIGKILL if still there after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ----------------------------------------------------------------------------- publishing
#: Manifest keys that describe how an artefact was made, not what it is: a rerun that makes the
#: same files keeps the published provenance.
BOOKKEEPING = ("provenance", "sha256", "params_sha256")


def _files_of(record: dict) -> list[str]:
    return [f for kind in ("figures", "tables") for e in record.get(kind, []) for f in e["files"]]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def params_hash(root: Path, profile: str, nb: str) -> str | None:
    """sha256 of params/<profile>/<nb>.yaml as it is now (None when it is gone)."""
    path = root / "params" / profile / f"{nb}.yaml"
    return _sha256(path) if path.is_file() else None


def _same_results(staging: Path, out: Path, new: dict, old: dict | None) -> bool:
    """True when every staged file equals the published one and the records match apart from
    their bookkeeping: then the published provenance (the run that made those bytes) stays."""
    if old is None:
        return False
    strip = lambda r: {k: v for k, v in r.items() if k not in BOOKKEEPING}  # noqa: E731
    if strip(new) != strip(old):
        return False
    for rel in _files_of(new):
        published = out / rel
        if not published.is_file() or published.read_bytes() != (staging / rel).read_bytes():
            return False
    return True


def _manifest_bytes(record: dict) -> bytes:
    return (json.dumps(record, indent=1, sort_keys=True) + "\n").encode()


def publish(root: Path, profile: str, nb: str, staging: Path, provenance: dict,
            overrides: dict | None = None) -> bool:
    """Move a finished notebook's staged artefacts into reports/<profile>/ (each file by an
    atomic rename; the manifest last) and remove the files its previous record listed that the
    new one does not.  The manifest records the sha256 of every file and of the params file,
    and the ``--set`` overrides.  Returns False when the run reproduced the published bytes
    exactly (then no artefact is rewritten, and the manifest only when its hashes were missing
    or the params file's bytes changed)."""
    out = reports_dir(profile, root)
    manifest = staging / "manifest" / f"{nb}.json"
    if not manifest.is_file():
        raise NotebookFailed("the notebook finished without saving any figure or table "
                             "(no Report output)")
    new = json.loads(manifest.read_text())
    if overrides:
        new["overrides"] = overrides
    new["params_sha256"] = params_hash(root, profile, nb)
    new["sha256"] = {rel: _sha256(staging / rel) for rel in _files_of(new)}
    old_path = out / "manifest" / f"{nb}.json"
    old = json.loads(old_path.read_text()) if old_path.is_file() else None
    if _same_results(staging, out, new, old) and old.get("provenance"):
        # the same bytes: the run that made them stays their provenance, unless this one
        # recomputed every job (--refresh-jobs), which then says so
        kept = dict(new, provenance=provenance if provenance.get("refresh_jobs")
                    else old["provenance"])
        if kept != old:
            _write(old_path, _manifest_bytes(kept))
        return False
    for rel in _files_of(new):
        target = out / rel
        with _writing(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, target)
    for rel in set(_files_of(old or {})) - set(_files_of(new)):
        (out / rel).unlink(missing_ok=True)
    new["provenance"] = provenance
    _write(old_path, _manifest_bytes(new))
    return True


def _names(changes: list[str], most: int = 3) -> str:
    more = f" and {len(changes) - most} more" if len(changes) > most else ""
    return ", ".join(changes[:most]) + more


def artefact_changes(out: Path, nb: str, state: dict) -> list[str]:
    """What of a notebook's published files differs from what reproduce published: the files
    whose sha256 is not the one its manifest recorded ('tables/x.csv', 'tables/x.md (removed)')
    and the manifest itself when it was edited (its sha256 is in the notebook's state) or
    removed.  [] when all match (or, for a record from before hashes, when nothing can tell)."""
    path = out / "manifest" / f"{nb}.json"
    rel = f"manifest/{nb}.json"
    if not path.is_file():
        return [f"{rel} (removed)"]
    changes = []
    if state.get("manifest_sha256") and _sha256(path) != state["manifest_sha256"]:
        changes.append(rel)
    try:
        record = json.loads(path.read_text())
    except ValueError:
        return changes or [rel]
    for name, digest in sorted((record.get("sha256") or {}).items()):
        published = out / name
        if not published.is_file():
            changes.append(f"{name} (removed)")
        elif _sha256(published) != digest:
            changes.append(name)
    return changes


def _read_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def stale_reasons(root: Path, profile: str, notebooks: list[str]) -> dict[str, str]:
    """For each published notebook of ``notebooks`` whose artefacts no longer match what made
    them, why: its params file changed (or is gone) since they were made, its last run failed
    or was interrupted, or its files were changed since reproduce published them."""
    out = reports_dir(profile, root)
    reasons = {}
    for nb in notebooks:
        path = out / "manifest" / f"{nb}.json"
        if not path.is_file():
            continue
        try:
            record = json.loads(path.read_text())
        except ValueError:
            reasons[nb] = f"manifest/{nb}.json cannot be read"
            continue
        state = _read_state(_state_path(root, profile, nb))
        why = []
        if state and not state.get("ok"):
            why.append("its last run was interrupted" if state.get("running")
                       else "its last run failed")
        if "params_sha256" in record and record["params_sha256"] != params_hash(root, profile, nb):
            why.append(f"params/{profile}/{nb}.yaml changed since these artefacts were made")
        changes = artefact_changes(out, nb, state)
        if changes:
            why.append(f"files changed since `cmkd reproduce` published them ({_names(changes)})")
        if why:
            reasons[nb] = "; ".join(why)
    return reasons


# ----------------------------------------------------------------------------- the command
def _raise_interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def reproduce(profile: str = "default", only: list[str] | None = None, force: bool = False,
              root: Path | None = None, overrides: list[str] | None = None,
              refresh_jobs: bool = False, executor=None,
              tensorboard: bool = False) -> int:
    """Run the selected notebooks on ``profile`` (a folder of params/) with the ``--set``
    ``overrides`` ('NN.param=value'); returns 0 when every one succeeded, 1 when one failed or
    a file could not be written, and 130 when interrupted.

    ``refresh_jobs``: run the notebooks (as ``force``) and every job they run again, although
    cached: ``$CMKD_REFRESH_JOBS`` (:data:`cmkd.jobs.run.REFRESH_ENV`) is set to this run's
    start time for the kernels, so a job cached before it is trained again, once (a job shared
    by two notebooks is served to the second); the manifests' provenance says
    ``refresh_jobs: true``.
    ``executor``: a :class:`cmkd.jobs.cluster.ExecutorChoice` for the notebooks' job grids
    (None: their own).
    ``tensorboard``: the jobs the notebooks train write TensorBoard event files
    (:func:`cmkd.jobs.run.run_jobs`)."""
    root = root or repo_root()
    if executor is not None:
        from cmkd.jobs.cluster import ExecutorError

        try:
            executor.check()
        except ExecutorError as err:
            raise SystemExit(f"cmkd reproduce: --executor: {err}") from None
    try:
        check_profile_name(profile)
    except ValueError as err:
        raise SystemExit(f"cmkd reproduce: --profile: {err}") from None
    known = profiles(root)
    if profile not in known:
        raise SystemExit(f"cmkd reproduce: no profile {profile!r} (no folder params/{profile}/); "
                         f"the profiles are the folders of params/: {', '.join(known) or 'none'}")
    available = discover(root)
    if not available:
        raise SystemExit(f"cmkd reproduce: no notebooks under {root / 'notebooks'}")
    chosen = select(available, only)
    sets = parse_overrides(overrides, available)
    unselected = [nb for nb in sets if nb not in chosen]
    if unselected:
        raise SystemExit(f"cmkd reproduce: --set names {', '.join(unselected)}, which --only "
                         "does not select")
    params = validate_all(root, profile, chosen, sets)
    for stray in stray_params(root, profile, available):
        print(f"cmkd reproduce: warning: {stray} matches no notebook under notebooks/ and is "
              "ignored (a misspelt name?)", file=sys.stderr)
    _check_writable(reports_dir(profile, root))
    from cmkd.jobs.run import REFRESH_ENV

    refresh = {REFRESH_ENV: repr(time.time())} if refresh_jobs else {}
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with profile_lock(root, profile), _environment(**refresh), \
                _environment(**({TENSORBOARD_ENV: "1"} if tensorboard else {})), \
                executor_environment(executor):
            return _reproduce(root, profile, chosen, available, params,
                              force or refresh_jobs, sets)
    finally:
        signal.signal(signal.SIGTERM, previous)


#: the executor choice of the running ``reproduce`` (for the manifests), see executor_environment
_EXECUTOR_RECORD: dict | None = None


@contextmanager
def executor_environment(choice):
    """The notebooks' kernels get ``choice`` (:class:`cmkd.jobs.cluster.ExecutorChoice`) through
    the environment (``CMKD_EXECUTOR`` ...).  A Dask cluster (local, or from a cluster file) is
    started once here and every kernel connects to its scheduler; it is closed at the end.
    None: nothing changes (a ``CMKD_EXECUTOR`` already set is inherited)."""
    global _EXECUTOR_RECORD
    if choice is None:
        yield
        return
    from cmkd.jobs.cluster import ENV

    built = None
    if choice.kind == "serial" or choice.scheduler is not None:
        env = choice.env()
    else:
        built = choice.build()
        env = dict(choice.env(), **{ENV["executor"]: "dask",
                                    ENV["scheduler"]: built.client.scheduler.address,
                                    ENV["workers"]: "", ENV["cluster"]: ""})
    _EXECUTOR_RECORD = choice.record()
    try:
        with _environment(**env):
            yield
    finally:
        _EXECUTOR_RECORD = None
        if built is not None:
            built.close()


def _executor_record() -> dict | None:
    """What trained the job grids of this run, for the manifest (not part of any staleness)."""
    if _EXECUTOR_RECORD is not None:
        return _EXECUTOR_RECORD
    from cmkd.jobs.cluster import ExecutorChoice, ExecutorError

    try:
        choice = ExecutorChoice.from_env()
    except ExecutorError:
        return None
    return None if choice is None else choice.record()


def _reproduce(root: Path, profile: str, chosen: list[str], available: list[str],
               params: dict[str, dict], force: bool, overrides: dict[str, dict]) -> int:
    from tqdm.auto import tqdm

    for gone in remove_leftovers(root, profile):
        print(f"cmkd reproduce: removed {gone} (left by an interrupted run)", file=sys.stderr)
    failed: dict[str, str] = {}
    summary = []
    stopped, code = None, 0
    bar = tqdm(chosen, desc=f"reproduce [{profile}]", unit="notebook", file=sys.stdout)
    try:
        for nb in bar:
            bar.set_postfix_str(nb)
            summary.append((nb, _one(root, profile, nb, params[nb], overrides.get(nb), force,
                                     failed)))
    except Interrupted as err:
        stopped, code = (f"interrupted while running {err.notebook}: its earlier artefacts, if "
                         "any, stay (flagged stale in REPORT.md) and the next run redoes it"), 130
    except OSError as err:
        if err.errno not in WRITE_ERRORS:
            raise
        stopped, code = _write_error(err, root), 1
    finally:
        # whatever stopped the run, REPORT.md says what is published now
        bar.close()
        shutil.rmtree(reports_dir(profile, root) / ".staging", ignore_errors=True)
        report = None
        try:
            report = write_report(profile, available, root, failed,
                                  stale_reasons(root, profile, available))
        except OSError as err:
            if err.errno not in WRITE_ERRORS:
                raise
            if stopped is None:
                stopped, code = _write_error(err, root), 1
    for nb, what in summary:
        print(f"  {nb}: {what}")
    if report is not None:
        print(f"report: {report.relative_to(root)}")
    if stopped:
        print(f"cmkd reproduce: {stopped}", file=sys.stderr)
        return code
    if failed:
        print(f"{len(failed)} notebook(s) failed; executed copies are under "
              f"reports/{profile}/notebooks/<name>.failed.ipynb", file=sys.stderr)
        return 1
    return 0


def _refreshing() -> bool:
    """Whether the jobs of this run are run again although cached (``--refresh-jobs``)."""
    from cmkd.jobs.run import refresh_since

    try:
        return refresh_since() is not None
    except ValueError:
        return False


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children so far: papermill, its
    kernel and the kernel's job workers, once each has been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _jobs_stored_since(since: float) -> int | None:
    """Job-cache folders stored at or after the Unix time ``since`` (their marker's 'finished'
    time): jobs trained for the first time and jobs trained again (``--refresh-jobs``, which
    replaces a folder under the same key); None when the cache cannot be listed."""
    from cmkd.jobs.cache import MARKER, TMP_PREFIX, cache_dir

    try:
        folder = cache_dir()
        if not folder.exists():
            return 0
        stored = 0
        for path in folder.iterdir():
            marker = path / MARKER
            if path.name.startswith(TMP_PREFIX) or not marker.is_file():
                continue
            try:
                finished = float(json.loads(marker.read_text()).get("finished", 0))
            except (OSError, ValueError, TypeError, AttributeError):
                continue
            stored += finished >= since
        return stored
    except OSError:
        return None


def _cost(cpu_before: float, since: float) -> dict:
    """What a notebook's run cost, for its manifest (``make bench ONLY=notebooks`` reads it):
    ``cpu_seconds`` of its processes (user + system: the machine's load does not inflate it, as
    it does the wall time), ``jobs_trained`` (job-cache folders stored since the run began,
    :func:`_jobs_stored_since`: 0 when every job came from the cache; another process filling
    the same cache at once counts too) and the machine's ``load_average`` (1, 5, 15 minutes)
    at the end."""
    return {"cpu_seconds": round(_children_cpu() - cpu_before, 1),
            "jobs_trained": _jobs_stored_since(since),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def _one(root: Path, profile: str, nb: str, params: dict, overrides: dict | None, force: bool,
         failed: dict[str, str]) -> str:
    """Skip, or run and publish, one notebook; returns what happened, in a few words.  A failure
    is added to ``failed``; Ctrl-C raises Interrupted."""
    from tqdm.auto import tqdm

    from cmkd.provenance import environment

    out = reports_dir(profile, root)
    digest = inputs_hash(root, nb, profile, overrides)
    state_path = _state_path(root, profile, nb)
    state = _read_state(state_path)
    if not force and state.get("inputs") == digest and state.get("ok"):
        changes = artefact_changes(out, nb, state)
        if not changes:
            return "skipped (inputs unchanged; --force reruns it)"
        tqdm.write(f"  {nb}: artefacts changed since the last run ({_names(changes)}): "
                   "rerunning", file=sys.stdout)
    # invalidated first: whatever happens from here, a rerun redoes this notebook
    _write(state_path, json.dumps({"inputs": digest, "ok": False, "running": True}) + "\n")
    staging = out / ".staging" / nb
    start, cpu, began = time.perf_counter(), _children_cpu(), time.time()
    try:
        try:
            _run_one(root, profile, nb, params, staging)
            seconds = time.perf_counter() - start
            run = json.loads((staging / RUN_FILE).read_text()) \
                if (staging / RUN_FILE).is_file() else {}
            provenance = dict(environment(root, params.get("device")),
                              wall_seconds=round(seconds, 1), **run,
                              **_cost(cpu, began))
            if _refreshing():
                provenance["refresh_jobs"] = True
            if _executor_record() is not None:
                provenance["executor"] = _executor_record()
            # no half-published notebook: a signal arriving now is handled after the state
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                changed = publish(root, profile, nb, staging, provenance, overrides)
                manifest = out / "manifest" / f"{nb}.json"
                _write(state_path, json.dumps({"inputs": digest, "ok": True,
                                               "last_run": provenance,
                                               "manifest_sha256": _sha256(manifest)}) + "\n")
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        except KeyboardInterrupt:
            raise Interrupted(nb) from None
    except NotebookFailed as err:
        failed[nb] = err.description
        _write(state_path, json.dumps({"inputs": digest, "ok": False}) + "\n")
        return f"FAILED at {failed[nb]}"
    finally:
        (staging.parent / f"{nb}.params.json").unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    (staging.parent / f"{nb}.log").unlink(missing_ok=True)
    what = "" if changed else "; artefacts identical to the published ones"
    return f"ok in {seconds:.1f} s{what}"


def refresh_notebooks(only: list[str] | None = None, root: Path | None = None) -> int:
    """Regenerate each notebook from its jupytext .py and store smoke-profile outputs in it.

    This is what makes nbval's baseline: the parameters cell holds the smoke defaults, the
    notebook runs top to bottom in notebooks/ with TQDM_DISABLE=1, and nbstripout drops volatile
    metadata while keeping outputs and execution counts.
    """
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    root = root or repo_root()
    sources = sorted((root / "notebooks").glob("[0-9][0-9]_*.py"))
    stems = select([p.stem for p in sources], only)
    for stem in stems:
        py = root / "notebooks" / f"{stem}.py"
        ipynb = py.with_suffix(".ipynb")
        print(f"refreshing {ipynb.relative_to(root)}", flush=True)
        nb = jupytext.read(py)
        nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                     "name": KERNEL}
        with _environment(TQDM_DISABLE="1", CMKD_ROOT=str(root)):
            # the kernel's own log at ERROR: no "running over TCP without encryption" warning
            NotebookClient(nb, kernel_name=KERNEL, timeout=1800,
                           extra_arguments=["--IPKernelApp.log_level=ERROR"],
                           resources={"metadata": {"path": str(py.parent)}}).execute()
        nbformat.write(nb, ipynb)
        subprocess.run([sys.executable, "-m", "nbstripout", "--keep-output", "--keep-count",
                        str(ipynb)], check=True)
    return 0
