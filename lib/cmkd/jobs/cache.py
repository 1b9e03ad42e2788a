"""The content-addressed cache of job results: one folder per job key.

Location: ``$CMKD_CACHE`` when set, else ``<repo root>/.cache/jobs`` (git-ignored).  A finished
job's folder ``<cache>/<key>/`` holds

- ``job.json``: the job's full config (:meth:`cmkd.jobs.Job.config`);
- ``result.json``: its flat result row (:func:`cmkd.jobs.run.result_row`), a list of rows (one
  per run) for a stack of runs;
- ``history.csv``: one row per epoch (``cmkd.engine.FitResult.history``);
- ``checkpoint.pt``: ``{'model': state_dict, 'which': 'final' | 'best', 'epoch': int}``;
- ``complete.json``: the completion marker (host, pid, finish time), written last.

:func:`store` writes everything into a temporary sibling folder ``.tmp-<key>-<token>`` (with an
``owner.json`` naming the host and process) and renames it to ``<key>`` in one ``os.rename``, so
readers see a finished folder or none.  A folder without the marker, or a temporary folder whose
process is gone, is incomplete: it is never read, :func:`remove_incomplete` (run by
``run_jobs``) and :func:`prune` (``cmkd cache prune``) delete it.  Temporary folders of a live
process on this host are left alone.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

MARKER = "complete.json"
RESULT = "result.json"
HISTORY = "history.csv"
CHECKPOINT = "checkpoint.pt"
JOB = "job.json"
OWNER = "owner.json"
TMP_PREFIX = ".tmp-"
_KEY = re.compile(r"^[0-9a-f]{64}$")


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache`` if given, else ``$CMKD_CACHE``, else
    ``<repo root>/.cache/jobs`` (``cmkd.reporting.repo_root``)."""
    if cache is not None:
        return Path(cache)
    env = os.environ.get("CMKD_CACHE")
    if env:
        return Path(env)
    from cmkd.reporting import repo_root

    return repo_root() / ".cache" / "jobs"


def folder(cache: Path, key: str) -> Path:
    return Path(cache) / key


def is_complete(path: Path) -> bool:
    return (Path(path) / MARKER).is_file()


def has(cache: Path, key: str) -> bool:
    """Whether job ``key`` has a finished folder in ``cache``."""
    return is_complete(folder(cache, key))


def read_result(cache: Path, key: str) -> dict | list[dict]:
    """The result of finished job ``key`` (a row; a list of rows for a stack of runs,
    :func:`read_rows`); FileNotFoundError when it is not cached."""
    path = folder(cache, key)
    if not is_complete(path):
        raise FileNotFoundError(f"job {key} has no finished result in the cache {cache}")
    return json.loads((path / RESULT).read_text())


def read_rows(cache: Path, key: str) -> list[dict]:
    """The result rows of finished job ``key``: one for a single run, one per run for a stack
    (whose ``result.json`` holds a list)."""
    result = read_result(cache, key)
    return result if isinstance(result, list) else [result]


def checkpoint_file(cache: Path, key: str) -> Path:
    """The checkpoint of finished job ``key``; FileNotFoundError when it is not cached."""
    path = folder(cache, key)
    if not is_complete(path):
        raise FileNotFoundError(f"job {key} has no finished result in the cache {cache}")
    return path / CHECKPOINT


def _fsync_tree(path: Path) -> None:
    for item in path.iterdir():
        if item.is_file():
            fd = os.open(item, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def store(cache: Path, key: str, write: Callable[[Path], None]) -> Path:
    """Store job ``key``'s files atomically: ``write(tmp)`` fills a temporary sibling folder,
    the marker is added and the folder renamed to ``<cache>/<key>``.

    If another process stored the same key meanwhile, its folder is kept and ours dropped (a job
    is deterministic, so both hold the same result).  On any exception (KeyboardInterrupt
    included) the temporary folder is removed.  Returns the final folder.
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
                                              "finished": time.time()}) + "\n")
        (tmp / OWNER).unlink()  # the marker names the owner from here on
        _fsync_tree(tmp)
        if dest.exists() and not is_complete(dest):
            shutil.rmtree(dest, ignore_errors=True)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not is_complete(dest):
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


def entries(cache: Path, incomplete_only: bool = False) -> list[dict]:
    """Every job folder of ``cache`` (finished or not; only unfinished ones with
    ``incomplete_only``), oldest first.

    Each: key, path, complete (bool), live (a temporary folder whose process still runs), kind,
    dataset, method, seed (from job.json when readable), size (bytes), age (seconds since it
    finished, or since the folder last changed).
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
        info: dict = {}
        try:
            info = json.loads((path / JOB).read_text())
        except (OSError, ValueError):
            pass
        stamp = (path / MARKER) if complete else path
        try:
            mtime = stamp.stat().st_mtime
        except OSError:
            continue  # removed meanwhile
        out.append({"key": key, "path": path, "complete": complete,
                    "live": tmp and _owner_alive(path),
                    "kind": info.get("kind"), "dataset": info.get("dataset"),
                    "method": info.get("method"), "seed": info.get("seed"),
                    "size": _size(path), "age": max(0.0, now - mtime)})
    return sorted(out, key=lambda e: (-e["age"], e["key"]))


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
    """Delete incomplete folders and, with ``older_than_days``, finished jobs older than that,
    or with ``everything`` every job folder (temporary folders of live processes included).
    Returns the entries removed (or that would be, with ``dry_run``)."""
    if older_than_days is not None and older_than_days < 0:
        raise ValueError(f"older_than_days must be >= 0, got {older_than_days}")
    gone = []
    for e in entries(cache):
        if everything or (not e["complete"] and not e["live"]) or (
                e["complete"] and older_than_days is not None
                and e["age"] > older_than_days * 86400):
            gone.append(e)
    if not dry_run:
        for e in gone:
            shutil.rmtree(e["path"], ignore_errors=True)
    return gone
