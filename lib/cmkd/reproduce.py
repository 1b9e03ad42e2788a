"""`cmkd reproduce`: run the numbered notebooks with papermill on a profile and write REPORT.md.

For each selected notebook: validate params/<profile>/<notebook>.yaml (all of them, before any
compute), skip it when its inputs (notebook, params file, the cmkd package with its data files,
requirements.lock) are unchanged since its last successful run, else execute it with papermill
into reports/<profile>/notebooks/.  A failing notebook is reported by name, cell and failing
statement while the others still run; the exit code says whether all succeeded.

A run survives interruption: one reproduce per profile at a time (a lock file); the notebook's
state is invalidated before it starts; its figures, tables and manifest are staged in
reports/<profile>/.staging/<notebook>/ and published only when it finishes, with the run's
provenance (:mod:`cmkd.provenance`); Ctrl-C (or SIGTERM) stops the notebook's process group and
leaves the previous artefacts and REPORT.md as they were; leftovers of a killed run are removed
by the next one.  ``refresh_notebooks`` (``make notebooks``) regenerates the stored smoke outputs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from cmkd.jobs.executors import die_with_parent
from cmkd.params import ParamError, load_params
from cmkd.reporting import (
    PROFILES,
    RUN_FILE,
    STAGING_ENV,
    atomic_write_bytes,
    atomic_write_text,
    repo_root,
    reports_dir,
    write_report,
)
from cmkd.text import quote

KERNEL = "python3"


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


def inputs_hash(root: Path, notebook: str, profile: str) -> str:
    """Hash of what a notebook's results depend on: the notebook, its params file, every file of
    the cmkd package (code, reference values, embedded data) and requirements.lock."""
    h = hashlib.sha256()
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


def validate_all(root: Path, profile: str, notebooks: list[str]) -> dict[str, dict]:
    """Read and validate every selected params file; returns the raw values per notebook.

    Raises SystemExit listing every problem; when a notebook's data are not found (its
    preflight), the message ends with the notebooks that need no dataset and how to run them.
    Nothing of the user's is imported here: once every file is valid, the import paths of
    user code the notebooks will run (a Config's ``user_code``, e.g. CrisisMMD's encoders) are
    listed on stderr, before any of it runs.
    """
    from cmkd.experiments import NOTEBOOKS, module_for
    from cmkd.params import read_yaml

    errors, values, no_data, code = [], {}, [], []
    for nb in notebooks:
        rel = f"params/{profile}/{nb}.yaml"
        if nb not in NOTEBOOKS:
            errors.append(f"{rel}: notebook {nb} has no experiment module registered in "
                          "cmkd.experiments.NOTEBOOKS, so its parameters cannot be checked")
            continue
        try:
            config = load_params(root / rel, module_for(nb).Config, rel)
            preflight = getattr(config, "preflight", None)  # data a notebook reads, if any
            if preflight is not None:
                try:
                    with _environment(CMKD_ROOT=str(root)):
                        preflight()
                except ParamError as err:
                    no_data.append(nb)
                    raise ParamError(err.name, err.message, rel) from None
            values[nb] = read_yaml(root / rel)
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
    """One clear line instead of a traceback when reports/ cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise SystemExit(f"cmkd reproduce: cannot write under {folder}: {err.strerror}; "
                         "check the folder's permissions") from None


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
    params_file.write_text(json.dumps(dict(params, profile=profile)))
    cmd = [sys.executable, "-m", "papermill", str(root / "notebooks" / f"{nb}.ipynb"), str(tmp),
           "-f", str(params_file), "-k", KERNEL, "--cwd", str(root / "notebooks"),
           "--no-progress-bar", "--no-log-output"]
    env = dict(os.environ, CMKD_ROOT=str(root), **{STAGING_ENV: str(staging)},
               PYTHONWARNINGS="ignore")
    with open(log, "wb") as log_fh:
        proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True,
                                preexec_fn=die_with_parent)
        try:
            code = proc.wait()
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
def _files_of(record: dict) -> list[str]:
    return [f for kind in ("figures", "tables") for e in record.get(kind, []) for f in e["files"]]


def _same_results(staging: Path, out: Path, new: dict, old: dict | None) -> bool:
    """True when every staged file equals the published one and the records match apart from
    their provenance: then the published provenance (the run that made those bytes) stays."""
    if old is None:
        return False
    strip = lambda r: {k: v for k, v in r.items() if k != "provenance"}  # noqa: E731
    if strip(new) != strip(old):
        return False
    for rel in _files_of(new):
        published = out / rel
        if not published.is_file() or published.read_bytes() != (staging / rel).read_bytes():
            return False
    return True


def publish(root: Path, profile: str, nb: str, staging: Path, provenance: dict) -> bool:
    """Move a finished notebook's staged artefacts into reports/<profile>/ (each file by an
    atomic rename; the manifest last) and remove the files its previous record listed that the
    new one does not.  Returns False when the run reproduced the published bytes exactly (then
    nothing is rewritten)."""
    out = reports_dir(profile, root)
    manifest = staging / "manifest" / f"{nb}.json"
    if not manifest.is_file():
        raise NotebookFailed("the notebook finished without saving any figure or table "
                             "(no Report output)")
    new = json.loads(manifest.read_text())
    old_path = out / "manifest" / f"{nb}.json"
    old = json.loads(old_path.read_text()) if old_path.is_file() else None
    if _same_results(staging, out, new, old) and old.get("provenance"):
        return False
    for rel in _files_of(new):
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, target)
    for rel in set(_files_of(old or {})) - set(_files_of(new)):
        (out / rel).unlink(missing_ok=True)
    new["provenance"] = provenance
    atomic_write_bytes(old_path, (json.dumps(new, indent=1, sort_keys=True) + "\n").encode())
    return True


# ----------------------------------------------------------------------------- the command
def _raise_interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def reproduce(profile: str = "default", only: list[str] | None = None, force: bool = False,
              root: Path | None = None) -> int:
    """Run the selected notebooks on ``profile``; returns 0 when every one succeeded, 1 when one
    failed and 130 when interrupted."""
    if profile not in PROFILES:
        raise SystemExit(f"cmkd reproduce: --profile must be one of {', '.join(PROFILES)}")
    root = root or repo_root()
    available = discover(root)
    if not available:
        raise SystemExit(f"cmkd reproduce: no notebooks under {root / 'notebooks'}")
    chosen = select(available, only)
    params = validate_all(root, profile, chosen)
    for stray in stray_params(root, profile, available):
        print(f"cmkd reproduce: warning: {stray} matches no notebook under notebooks/ and is "
              "ignored (a misspelt name?)", file=sys.stderr)
    _check_writable(reports_dir(profile, root))
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with profile_lock(root, profile):
            return _reproduce(root, profile, chosen, available, params, force)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _reproduce(root: Path, profile: str, chosen: list[str], available: list[str],
               params: dict[str, dict], force: bool) -> int:
    from tqdm.auto import tqdm

    from cmkd.provenance import environment

    for gone in remove_leftovers(root, profile):
        print(f"cmkd reproduce: removed {gone} (left by an interrupted run)", file=sys.stderr)
    failed: dict[str, str] = {}
    summary = []
    bar = tqdm(chosen, desc=f"reproduce [{profile}]", unit="notebook", file=sys.stdout)
    for nb in bar:
        bar.set_postfix_str(nb)
        digest = inputs_hash(root, nb, profile)
        state_path = _state_path(root, profile, nb)
        state = json.loads(state_path.read_text()) if state_path.is_file() else {}
        if not force and state.get("inputs") == digest and state.get("ok"):
            summary.append((nb, "skipped (inputs unchanged; --force reruns it)"))
            continue
        # invalidated first: whatever happens from here, a rerun redoes this notebook
        atomic_write_text(state_path, json.dumps({"inputs": digest, "ok": False,
                                                  "running": True}) + "\n")
        staging = reports_dir(profile, root) / ".staging" / nb
        start = time.perf_counter()
        try:
            try:
                _run_one(root, profile, nb, params[nb], staging)
                seconds = time.perf_counter() - start
                run = json.loads((staging / RUN_FILE).read_text()) \
                    if (staging / RUN_FILE).is_file() else {}
                provenance = dict(environment(root, params[nb].get("device")),
                                  wall_seconds=round(seconds, 1), **run)
                # no half-published notebook: a signal arriving now is handled after the state
                blocked = signal.pthread_sigmask(signal.SIG_BLOCK,
                                                 {signal.SIGINT, signal.SIGTERM})
                try:
                    changed = publish(root, profile, nb, staging, provenance)
                    atomic_write_text(state_path, json.dumps({"inputs": digest, "ok": True,
                                                              "last_run": provenance}) + "\n")
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            except KeyboardInterrupt:
                raise Interrupted(nb) from None
        except Interrupted:
            bar.close()
            shutil.rmtree(staging.parent, ignore_errors=True)
            print(f"cmkd reproduce: interrupted while running {nb}; its previous artefacts and "
                  f"REPORT.md are unchanged, and the next run redoes it", file=sys.stderr)
            return 130
        except NotebookFailed as err:
            failed[nb] = err.description
            summary.append((nb, f"FAILED at {failed[nb]}"))
            atomic_write_text(state_path, json.dumps({"inputs": digest, "ok": False}) + "\n")
            shutil.rmtree(staging, ignore_errors=True)
            continue
        finally:
            for leftover in (staging.parent / f"{nb}.params.json",):
                leftover.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        (staging.parent / f"{nb}.log").unlink(missing_ok=True)
        what = "" if changed else "; artefacts identical to the published ones"
        summary.append((nb, f"ok in {seconds:.1f} s{what}"))
    bar.close()
    shutil.rmtree(reports_dir(profile, root) / ".staging", ignore_errors=True)
    report = write_report(profile, available, root, failed)
    for nb, what in summary:
        print(f"  {nb}: {what}")
    print(f"report: {report.relative_to(root)}")
    if failed:
        print(f"{len(failed)} notebook(s) failed; executed copies are under "
              f"reports/{profile}/notebooks/<name>.failed.ipynb", file=sys.stderr)
        return 1
    return 0


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
