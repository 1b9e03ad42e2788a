"""The content-addressed cache of job results: one folder per job key.

Location: ``$CMKD_CACHE`` when set (a relative path is taken from the project folder,
:func:`cache_dir`), else ``<repo root>/.cache/jobs`` (git-ignored).  A finished job's folder
``<cache>/<key>/`` holds

- ``job.json``: the job's full config (:meth:`cmkd.jobs.Job.config`);
- ``result.json``: its flat result row (:func:`cmkd.jobs.run.result_row`), a list of rows (one
  per run) for a stack of runs;
- ``history.csv``: one row per epoch (``cmkd.engine.FitResult.history``);
- ``checkpoint.pt``: ``{'model': state_dict, 'which': 'final' | 'best', 'epoch': int}``;
- ``complete.json``: the completion marker (host, pid, finish time, and that a manifest was
  written, so deleting the manifest does not pass a folder off as legacy; what cmkd before
  checksums looks for);
- ``checksums.json``: the manifest, written last: the key and the sha256 of every other file.

:func:`store` writes everything into a temporary sibling folder ``.tmp-<key>-<token>`` (with an
``owner.json`` naming the host and process) and renames it to ``<key>`` in one ``os.rename``, so
readers see a finished folder or none.  A folder with neither the marker nor the manifest, or a
temporary folder whose process is gone, is incomplete: it is never read, :func:`remove_incomplete`
(run by ``run_jobs``) and :func:`prune` (``cmkd cache prune``) delete it.  Temporary folders of
a live process on this host are left alone.

Verification.  Every read (:func:`has`, :func:`read_result`, :func:`read_rows`,
:func:`checkpoint_file`, :func:`history_file`) checks the folder first (:func:`check`): the
manifest names the folder's own key (a folder copied over another's is caught), every file it
lists is there with its checksum (a truncated, edited or deleted file is caught),
``result.json`` parses and its rows carry the folder's key.  The key is not recomputed from
``job.json`` (that needs the job's code); a folder's name is trusted once its manifest agrees.
A bad folder is named in one line on stderr, moved to ``<cache>/quarantine/`` (with a
``quarantined.json`` saying why) and treated as missing, so ``run_jobs`` trains the job again.

Folders written before the manifest existed ("legacy": the marker, no ``checksums.json``; cmkd
before this change, or a process still running that code, writes them) cannot be checked byte
for byte.  They are used when the four job files are there, ``job.json`` and ``result.json``
parse, the rows carry the folder's key (a copy is caught) and the checkpoint is a whole zip
archive (a cut one is caught); otherwise they are bad.  An edit inside one is not seen: throwing
every such folder away would retrain a whole cache whose keys are unchanged, so they are kept,
and ``cmkd cache verify --seal`` records their checksums from then on (``--strict`` counts them
as bad, ``--strict --fix`` moves them aside to be trained again).  ``cmkd cache verify`` checks
every folder (``--fix`` moves bad ones aside); ``cmkd cache prune`` removes the bad ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MARKER = "complete.json"
MANIFEST = "checksums.json"
RESULT = "result.json"
HISTORY = "history.csv"
CHECKPOINT = "checkpoint.pt"
JOB = "job.json"
OWNER = "owner.json"
TMP_PREFIX = ".tmp-"
QUARANTINE = "quarantine"
#: written into a folder moved to quarantine/: why, when, by whom
WHY = "quarantined.json"
#: the files every job folder written by :func:`cmkd.jobs.run.run_job` holds
JOB_FILES = (JOB, RESULT, HISTORY, CHECKPOINT)
_KEY = re.compile(r"^[0-9a-f]{64}$")


def project_root() -> Path:
    """The project folder (``cmkd.reporting.repo_root``: $CMKD_ROOT, else the nearest folder
    above the working directory holding params/ and notebooks/, else the checkout the package
    runs from), or the working directory when there is none."""
    from cmkd.reporting import repo_root

    try:
        return repo_root()
    except FileNotFoundError:
        return Path.cwd()


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache`` if given, else ``$CMKD_CACHE``, else
    ``<repo root>/.cache/jobs`` (``cmkd.reporting.repo_root``).

    A relative ``$CMKD_CACHE`` is taken from the project folder (:func:`project_root`; the
    working directory where there is no project), not from the working directory, so a notebook
    run from notebooks/ and a command run from the project folder share one cache.  A path that
    is (or lies under) a file is a NotADirectoryError here, before any training.
    """
    if cache is not None:
        return _usable(Path(cache), "the cache folder given")
    env = os.environ.get("CMKD_CACHE")
    if env:
        path = Path(env).expanduser()
        if not path.is_absolute():
            path = project_root() / path
        return _usable(path, f"$CMKD_CACHE={env}")
    from cmkd.reporting import repo_root

    return _usable(repo_root() / ".cache" / "jobs", "the default cache folder")


def _usable(path: Path, source: str) -> Path:
    """``path``, unless it or the nearest existing folder above it is not a folder."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = ("is a file, not a folder" if p == path else
                        f"cannot be created: {p} is a file")
                hint = "; set CMKD_CACHE to a folder" if "CMKD_CACHE" in source else ""
                raise NotADirectoryError(f"the job cache {path} ({source}) {what}{hint}")
            break
    return path


def writable(cache: Path) -> Path:
    """Check, before any training, that jobs can be stored in ``cache``: the folder is created
    and a small probe file written, synced and removed there.  A read-only or full disk (or a
    folder one may not write) is an OSError of one line naming the folder and the reason, with
    what to do; nothing is trained first only to fail at the store."""
    cache = Path(cache)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f"{TMP_PREFIX}probe-", dir=cache)
        try:
            os.write(fd, b"0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise OSError(e.errno, f"the job cache {cache} cannot be written ({reason}): no job was "
                               f"trained; free space there or set CMKD_CACHE to a writable "
                               f"folder") from None
    return cache


def folder(cache: Path, key: str) -> Path:
    return Path(cache) / key


def is_complete(path: Path) -> bool:
    """Whether folder ``path`` was finished by its writer (its marker or its manifest is there;
    whether it is sound is :func:`check`'s)."""
    path = Path(path)
    return (path / MARKER).is_file() or (path / MANIFEST).is_file()


# ----------------------------------------------------------------------------- verification
@dataclass(frozen=True)
class Check:
    """What :func:`check` found in a job folder.

    state: 'ok' (its manifest verified), 'legacy' (written before manifests; the checks that
    need none passed), 'bad' (``problem`` says what is wrong, naming the file), 'incomplete'
    (neither marker nor manifest: a writer never finished it) or 'missing' (no folder).
    result: the parsed ``result.json`` of a usable folder.  ino: the folder's inode when
    checked (a folder replaced since is not moved aside on the strength of this check).
    """

    state: str
    problem: str | None = None
    result: object = None
    ino: int | None = None

    @property
    def usable(self) -> bool:
        return self.state in ("ok", "legacy")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _short(key: object) -> str:
    return str(key)[:12]


def _parse_result(path: Path) -> tuple[object, str | None]:
    """(the parsed result.json of folder ``path``, None), or (None, what is wrong with it)."""
    try:
        text = (path / RESULT).read_text()
    except FileNotFoundError:
        return None, f"{RESULT} is missing"
    except (OSError, UnicodeDecodeError) as err:
        return None, f"{RESULT} cannot be read ({err})"
    try:
        result = json.loads(text)
    except ValueError as err:
        return None, f"{RESULT} is not valid JSON (truncated or edited?): {err}"
    rows = result if isinstance(result, list) else [result]
    if not rows or not all(isinstance(r, dict) for r in rows):
        return None, f"{RESULT} holds no result rows"
    for row in rows:
        if "key" in row and row["key"] != path.name:
            return None, (f"{RESULT} holds the rows of job {_short(row['key'])}, not of this "
                          f"folder's {_short(path.name)} (copied from another job's folder?)")
    return result, None


def _check_manifest(path: Path) -> str | None:
    """What is wrong with the manifest of folder ``path`` or the files it lists, or None."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        key, files = manifest["key"], manifest["files"]
        if not (isinstance(key, str) and isinstance(files, dict)
                and all(isinstance(v, str) for v in files.values())):
            raise TypeError("unexpected layout")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        return f"{MANIFEST} cannot be read ({err})"
    if key != path.name:
        return (f"{MANIFEST} names job {_short(key)}, not this folder's {_short(path.name)} "
                f"(copied or moved from another job's folder?)")
    if RESULT not in files:
        return f"{MANIFEST} lists no {RESULT}"
    for name, digest in sorted(files.items()):
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            return f"{MANIFEST} lists {name!r}, a file outside the folder"
        try:
            actual = sha256_file(path / rel)
        except FileNotFoundError:
            return f"{name} is missing"
        except OSError as err:
            return f"{name} cannot be read ({err.strerror or err})"
        if actual != digest:
            return f"{name} does not match its checksum (changed or truncated since it was stored)"
    return None


def _check_legacy(path: Path) -> str | None:
    """What is wrong with a folder written before manifests, as far as can be told without
    checksums, or None (its result is checked by the caller)."""
    for name in JOB_FILES:
        if not (path / name).is_file():
            return f"{name} is missing"
    try:
        json.loads((path / JOB).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return f"{JOB} cannot be read (truncated or edited?): {err}"
    if not zipfile.is_zipfile(path / CHECKPOINT):  # torch.save's format: truncation shows
        return f"{CHECKPOINT} is not a whole zip archive (truncated?)"
    return None


def _marker(path: Path) -> dict:
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def check(path: Path) -> Check:
    """Check job folder ``path`` (its name is the key) without changing it; see the module's
    docstring for what is checked."""
    path = Path(path)
    try:
        ino = path.stat().st_ino
    except FileNotFoundError:
        return Check("missing")
    if not path.is_dir():
        return Check("bad", "is not a folder", ino=ino)
    if (path / MANIFEST).is_file():
        state, problem = "ok", _check_manifest(path)
    elif (path / MARKER).is_file():
        state, problem = "legacy", _check_legacy(path)
        if _marker(path).get("manifest") == MANIFEST:  # stored with one: not legacy at all
            problem = f"{MANIFEST} is missing"
    else:
        return Check("incomplete", ino=ino)
    result = None
    if problem is None:
        result, problem = _parse_result(path)
    if problem is not None:
        return Check("bad", problem, ino=ino)
    return Check(state, result=result, ino=ino)


def _set_aside(path: Path, found: Check) -> Path | None:
    """Move bad folder ``path`` into ``quarantine/`` of its cache (with a note saying why);
    its new path, or None when it was replaced or removed since ``found`` was checked.  An
    OSError (a read-only cache) is raised."""
    quarantine = path.parent / QUARANTINE
    try:
        if found.ino is not None and path.stat().st_ino != found.ino:
            return None  # another process replaced it meanwhile: this check is not about it
        quarantine.mkdir(exist_ok=True)
        dest = quarantine / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"
        os.rename(path, dest)
    except FileNotFoundError:
        return None  # moved or removed by another process meanwhile
    try:
        (dest / WHY).write_text(json.dumps({
            "key": path.name, "problem": found.problem, "moved": time.time(),
            "host": socket.gethostname(), "pid": os.getpid()}) + "\n")
    except OSError:
        pass
    return dest


def _warn(message: str) -> None:
    print(f"cmkd cache: {message}", file=sys.stderr, flush=True)


def _sound(cache: Path, key: str) -> Check:
    """:func:`check` job ``key``'s folder; a bad one is named in one line on stderr and moved
    aside (so the job counts as missing and is trained again)."""
    path = folder(cache, key)
    for _ in range(3):
        found = check(path)
        if found.state != "bad":
            return found
        try:
            moved = _set_aside(path, found)
        except OSError as err:
            _warn(f"job {_short(key)} in {cache} is bad: {found.problem}; it could not be moved "
                  f"aside ({err.strerror or err}) and is treated as missing")
            return found
        if moved is not None:
            _warn(f"job {_short(key)} in {cache} is bad: {found.problem}; moved to "
                  f"{QUARANTINE}/{moved.name} and treated as missing (run_jobs trains it again)")
            return found
        if not path.exists():
            return Check("missing")  # another process moved it aside (and said so)
    return found  # replaced again and again: leave it to the next read


def has(cache: Path, key: str) -> bool:
    """Whether job ``key`` has a sound finished folder in ``cache`` (:func:`check`; a bad one
    is moved aside with a warning)."""
    return _sound(Path(cache), key).usable


def finished_at(cache: Path, key: str) -> float | None:
    """When job ``key``'s folder was finished (its marker's time, else the folder's mtime), or
    None when there is none."""
    path = folder(Path(cache), key)
    stamp = _marker(path).get("finished")
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
        return float(stamp)
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _unusable(cache: Path, key: str, found: Check) -> FileNotFoundError:
    if found.state == "bad":
        return FileNotFoundError(f"job {key} has no usable result in the cache {cache}: "
                                 f"{found.problem} (a run of the job stores it again)")
    return FileNotFoundError(f"job {key} has no finished result in the cache {cache}")


def read_result(cache: Path, key: str) -> dict | list[dict]:
    """The result of finished job ``key`` (a row; a list of rows for a stack of runs,
    :func:`read_rows`); FileNotFoundError when it is not cached, or its folder is bad (moved
    aside with a warning, :func:`check`)."""
    found = _sound(Path(cache), key)
    if not found.usable:
        raise _unusable(cache, key, found)
    return found.result


def read_rows(cache: Path, key: str) -> list[dict]:
    """The result rows of finished job ``key``: one for a single run, one per run for a stack
    (whose ``result.json`` holds a list)."""
    result = read_result(cache, key)
    return result if isinstance(result, list) else [result]


def stored_file(cache: Path, key: str, name: str) -> Path:
    """File ``name`` of finished job ``key``, its folder checked (:func:`check`);
    FileNotFoundError when the job is not cached, its folder is bad (moved aside with a
    warning) or it stored no such file."""
    found = _sound(Path(cache), key)
    if not found.usable:
        raise _unusable(cache, key, found)
    path = folder(cache, key) / name
    if not path.is_file():
        raise FileNotFoundError(f"job {key} stored no {name} in the cache {cache}")
    return path


def checkpoint_file(cache: Path, key: str) -> Path:
    """The checkpoint of finished job ``key``: :func:`stored_file`."""
    return stored_file(cache, key, CHECKPOINT)


def history_file(cache: Path, key: str) -> Path:
    """The per-epoch history of finished job ``key``: :func:`stored_file`."""
    return stored_file(cache, key, HISTORY)


def _manifest(path: Path, key: str) -> dict:
    """The manifest of folder ``path``: ``key`` and the sha256 of every file in it but the
    manifest and hidden (dot) files."""
    files = {p.relative_to(path).as_posix(): sha256_file(p) for p in sorted(path.rglob("*"))
             if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")}
    return {"key": key, "algorithm": "sha256", "files": files}


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def seal(path: Path) -> bool:
    """Write the manifest of legacy folder ``path`` when it passes :func:`check` (its files as
    they are now: later changes are caught, earlier ones cannot be), and mark it as having one;
    whether it was sealed."""
    path = Path(path)
    if check(path).state != "legacy":
        return False
    try:
        _replace_text(path / MARKER, json.dumps({**_marker(path), "manifest": MANIFEST}) + "\n")
        _replace_text(path / MANIFEST, json.dumps(_manifest(path, path.name), indent=1) + "\n")
    except FileNotFoundError:
        return False  # moved aside or removed meanwhile
    return True


def _fsync_tree(path: Path) -> None:
    for item in path.iterdir():
        if item.is_file():
            fd = os.open(item, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def store(cache: Path, key: str, write: Callable[[Path], None], replace: bool = False) -> Path:
    """Store job ``key``'s files atomically: ``write(tmp)`` fills a temporary sibling folder,
    the marker and then the manifest (the key and every file's sha256) are added and the folder
    renamed to ``<cache>/<key>``.

    A bad folder already there is moved aside (:func:`check`), an incomplete one deleted.  If
    another process stored the same key meanwhile, its folder is kept and ours dropped (a job
    is deterministic, so both hold the same result), unless ``replace`` (a job run again on
    purpose, ``--refresh-jobs``): the folder there is then replaced by ours.  On any exception
    (KeyboardInterrupt included) the temporary folder is removed.  Returns the final folder.
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    dest = folder(cache, key)
    tmp = cache / f"{TMP_PREFIX}{key}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        (tmp / OWNER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
        write(tmp)
        (tmp / MARKER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                              "finished": time.time(),
                                              "manifest": MANIFEST}) + "\n")
        (tmp / OWNER).unlink()  # the marker names the owner from here on
        (tmp / MANIFEST).write_text(json.dumps(_manifest(tmp, key), indent=1) + "\n")  # last
        _fsync_tree(tmp)
        found = check(dest)
        if found.state == "incomplete":
            shutil.rmtree(dest, ignore_errors=True)
        elif found.state == "bad":
            _sound(cache, key)  # moves it aside, saying why
        elif replace and found.state != "missing":
            old = cache / f"{TMP_PREFIX}{key}-{secrets.token_hex(4)}-replaced"
            try:
                os.rename(dest, old)
            except FileNotFoundError:
                pass
            else:
                shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not check(dest).usable:
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # stored by another process meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


# ----------------------------------------------------------------------------- listing, pruning
def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _owner_alive(path: Path) -> bool:
    """Whether a temporary folder belongs to a running process on this host."""
    owner = None
    for name in (OWNER, MARKER):
        try:
            owner = json.loads((path / name).read_text())
            break
        except (OSError, ValueError):
            continue
    if not isinstance(owner, dict):  # just created (owner not yet written) or abandoned
        try:
            return time.time() - path.stat().st_mtime < 60
        except OSError:
            return False
    if owner.get("host") != socket.gethostname():
        return True  # another machine's process: cannot tell, leave it to an explicit prune
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    return True


def _job_info(path: Path) -> dict:
    try:
        info = json.loads((path / JOB).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def entries(cache: Path, incomplete_only: bool = False) -> list[dict]:
    """Every job folder of ``cache`` (finished or not; only unfinished ones with
    ``incomplete_only``), oldest first; the folders in ``quarantine/`` are not among them
    (:func:`quarantined`).

    Each: key, path, complete (bool: its writer finished it; whether it is sound is
    :func:`check`'s), manifest (it has one; False: written before checksums), live (a
    temporary folder whose process still runs), kind, dataset, method, seed (from job.json when
    readable), size (bytes), age (seconds since it finished, or since the folder last changed).
    """
    cache = Path(cache)
    if not cache.is_dir():
        return []
    now = time.time()
    out = []
    for path in cache.iterdir():
        if not path.is_dir():
            continue
        tmp = path.name.startswith(TMP_PREFIX)
        if not tmp and not _KEY.match(path.name):
            continue
        complete = not tmp and is_complete(path)
        if complete and incomplete_only:
            continue
        key = path.name[len(TMP_PREFIX):len(TMP_PREFIX) + 64] if tmp else path.name
        info = _job_info(path)
        stamp = (path / MARKER) if complete and (path / MARKER).is_file() else path
        try:
            mtime = stamp.stat().st_mtime
        except OSError:
            continue  # removed meanwhile
        out.append({"key": key, "path": path, "complete": complete,
                    "manifest": complete and (path / MANIFEST).is_file(),
                    "live": tmp and _owner_alive(path),
                    "kind": info.get("kind"), "dataset": info.get("dataset"),
                    "method": info.get("method"), "seed": info.get("seed"),
                    "size": _size(path), "age": max(0.0, now - mtime)})
    return sorted(out, key=lambda e: (-e["age"], e["key"]))


def quarantined(cache: Path) -> list[dict]:
    """The bad folders moved to ``<cache>/quarantine/``, oldest first: key, path, problem (why
    it was moved), kind, dataset, method, seed, size, age (seconds since it was moved)."""
    root = Path(cache) / QUARANTINE
    if not root.is_dir():
        return []
    now = time.time()
    out = []
    for path in root.iterdir():
        if not path.is_dir():
            continue
        try:
            why = json.loads((path / WHY).read_text())
        except (OSError, ValueError):
            why = {}
        why = why if isinstance(why, dict) else {}
        info = _job_info(path)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            continue
        out.append({"key": path.name[:64], "path": path, "complete": False, "manifest": False,
                    "live": False, "state": "quarantined", "problem": why.get("problem"),
                    "kind": info.get("kind"), "dataset": info.get("dataset"),
                    "method": info.get("method"), "seed": info.get("seed"),
                    "size": _size(path), "age": max(0.0, now - float(why.get("moved", mtime)))})
    return sorted(out, key=lambda e: (-e["age"], e["path"].name))


def verify(cache: Path, fix: bool = False, strict: bool = False,
           seal_legacy: bool = False) -> list[dict]:
    """Check every finished folder of ``cache`` (:func:`check`); the :func:`entries` with
    state ('ok', 'legacy' or 'bad'; a legacy one counts as 'bad' with ``strict``), problem and
    moved (its new path when ``fix`` moved a bad one to ``quarantine/``, else None).
    ``seal_legacy`` writes the manifest of the sound legacy folders (:func:`seal`; their state
    becomes 'ok')."""
    out = []
    for e in entries(cache):
        if not e["complete"]:
            continue
        found = check(e["path"])
        if found.state == "missing":
            continue  # removed meanwhile
        if strict and found.state == "legacy":
            found = Check("bad", f"written before checksums ({MANIFEST} is missing), so it "
                                 "cannot be verified", ino=found.ino)
        elif seal_legacy and found.state == "legacy" and seal(e["path"]):
            found = check(e["path"])
        moved = _set_aside(e["path"], found) if fix and found.state == "bad" else None
        out.append({**e, "state": found.state, "problem": found.problem, "moved": moved})
    return out


def remove_incomplete(cache: Path, dry_run: bool = False) -> list[dict]:
    """Delete the incomplete folders of ``cache`` (not those a live local process is writing);
    return their entries."""
    gone = [e for e in entries(cache, incomplete_only=True) if not e["live"]]
    if not dry_run:
        for e in gone:
            shutil.rmtree(e["path"], ignore_errors=True)
    return gone


def prune(cache: Path, older_than_days: float | None = None, everything: bool = False,
          dry_run: bool = False) -> list[dict]:
    """Delete incomplete folders, bad ones (:func:`check`) and those in ``quarantine/``; with
    ``older_than_days`` also finished jobs older than that, or with ``everything`` every job
    folder (temporary folders of live processes included).  Returns the entries removed (or
    that would be, with ``dry_run``), each with a state: 'incomplete', 'bad' (with its
    problem), 'quarantined', or for a sound one its :func:`check` state ('ok', 'legacy'; None
    when ``everything`` skipped the check)."""
    if older_than_days is not None and older_than_days < 0:
        raise ValueError(f"older_than_days must be >= 0, got {older_than_days}")
    cache = Path(cache)
    gone = []
    for e in entries(cache):
        if not e["complete"]:
            if everything or not e["live"]:
                gone.append({**e, "state": "incomplete", "problem": None, "found": None})
            continue
        found = None if everything else check(e["path"])
        if found is not None and found.state == "missing":
            continue
        old = older_than_days is not None and e["age"] > older_than_days * 86400
        if everything or old or found.state == "bad":
            gone.append({**e, "state": None if found is None else found.state,
                         "problem": None if found is None else found.problem, "found": found})
    gone += [{**e, "found": None} for e in quarantined(cache)]
    if not dry_run:
        for e in gone:
            path = e["path"]
            if e["state"] == "bad":  # moved first: a sound folder stored there since stays
                path = _set_aside(path, e["found"])
                if path is None:
                    continue
            shutil.rmtree(path, ignore_errors=True)
        try:
            (cache / QUARANTINE).rmdir()  # when empty
        except OSError:
            pass
    for e in gone:
        del e["found"]
    return gone
