"""The `cmkd` command."""

from __future__ import annotations

import argparse
import os
import sys


def version() -> str:
    """The installed package's version (importlib.metadata), else ``cmkd.__version__`` (a
    checkout on PYTHONPATH that was never installed)."""
    from importlib import metadata

    try:
        return metadata.version("cmkd")
    except metadata.PackageNotFoundError:
        from cmkd import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # a reader gone away shows here, not in the interpreter's exit
        return code
    except KeyboardInterrupt:
        print("cmkd: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _reader_gone(sys.stdout):
            raise  # some other pipe (a worker's): a real error
        # `cmkd cache list | head -1`: the reader has what it wants; stop quietly, with the
        # status of a Unix tool stopped by SIGPIPE, and no second error when Python exits
        # and flushes stdout
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # 128 + SIGPIPE (13)


def _reader_gone(stream) -> bool:
    """Whether ``stream`` writes into a pipe whose reading end is closed (poll reports an error
    on it); True where that cannot be asked (no poll: the error is stdout's most likely)."""
    import select

    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False  # not a file (a test's capture): the broken pipe was another one
    if not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cmkd", description="crossmodal KD study")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run notebooks with papermill and write REPORT.md")
    rep.add_argument("--profile", default="default", metavar="NAME",
                     help="any folder of params/ (smoke, default, paper, ...): the parameters "
                          "params/NAME/ and the report reports/NAME/ (default: default)")
    rep.add_argument("--only", nargs="+", metavar="NN",
                     help="notebook numbers (01 02 ...) or names; default: all")
    rep.add_argument("--force", action="store_true",
                     help="rerun notebooks whose inputs are unchanged since their last success")
    rep.add_argument("--refresh-jobs", action="store_true",
                     help="also run every job of the selected notebooks again, although cached "
                          "(each once; implies --force); the manifests record it")
    rep.add_argument("--set", action="append", dest="overrides", metavar="NN.PARAM=VALUE",
                     help="override one parameter of notebook NN for this run, the value read "
                          "as YAML (e.g. --set 06.epochs=3); repeatable; checked like the "
                          "params file and shown in REPORT.md")
    rep.add_argument("--tensorboard", action="store_true",
                     help="every job the notebooks train writes TensorBoard event files under "
                          ".cache/tb/<job key>/ (open with: tensorboard --logdir .cache/tb); "
                          "keys and results unchanged, cached jobs write none")
    _executor_options(rep, "scale out (the job grids of notebooks 04, 06, 08, 10 on Dask; "
                           "README 'Scale out')")
    ref = sub.add_parser("refresh-notebooks",
                         help="regenerate stored notebook outputs (nbval baseline) from smoke")
    ref.add_argument("--only", nargs="+", metavar="NN")
    dat = sub.add_parser("datasets", help="say which real datasets are found under a folder")
    dat.add_argument("--root", required=True,
                     help="folder holding the datasets under their usual folder names")
    cac = sub.add_parser("cache", help="list, verify or prune the cache of job results")
    cac_sub = cac.add_subparsers(dest="cache_command", required=True)
    where = "cache folder (default: $CMKD_CACHE or <repo>/.cache/jobs)"
    lst = cac_sub.add_parser("list", help="one line per cached job: key, kind, dataset, method, "
                                          "seed, size, age")
    lst.add_argument("--cache", help=where)
    ver = cac_sub.add_parser("verify", help="check every finished job's files against its "
                                            "checksums; one line per bad one (status 1 if any)")
    ver.add_argument("--cache", help=where)
    ver.add_argument("--fix", action="store_true",
                     help="move the bad ones to quarantine/ (their jobs are trained again)")
    how = ver.add_mutually_exclusive_group()
    how.add_argument("--strict", action="store_true",
                     help="count the jobs stored before checksums (no checksums.json) as bad")
    how.add_argument("--seal", action="store_true",
                     help="write checksums.json for the sound jobs stored before checksums")
    prn = cac_sub.add_parser("prune", help="remove incomplete and bad folders and, if asked, "
                                           "old or all finished jobs")
    prn.add_argument("--cache", help=where)
    prn.add_argument("--older-than", type=float, metavar="DAYS",
                     help="also remove finished jobs older than DAYS days")
    prn.add_argument("--all", action="store_true", help="remove every job folder")
    prn.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    prn.add_argument("--force", action="store_true",
                     help="remove finished jobs even while a cmkd reproduce runs or a job is "
                          "being written")
    dia = sub.add_parser(
        "diagnose", help="will crossmodal KD help? a pre-flight check on a pair of modalities",
        description="Train unimodal models only (cached jobs) and measure modality imbalance, "
                    "soft-label alignment (KRC, C2KD's filter), feature CKA and MFH Algorithm "
                    "1's modality-general share; write a verdict for KD and for C2KD (help / "
                    "hurt / unclear) with the numbers and figures behind it to DIR.")
    dia.add_argument("source", metavar="FILE_OR_DATASET",
                     help="a pairs file (.npz / .pt with arrays a, b, y and optional split) or "
                          "a dataset name (avdigits, mfeat, ave, ...)")
    dia.add_argument("--teacher", help="the modality that teaches (a / b for a file; audio / "
                                       "visual; an mfeat view); default: both directions")
    dia.add_argument("--student", help="the modality that learns (default: the other one)")
    dia.add_argument("--root", help="folder of a real dataset (not for files or embedded sets)")
    dia.add_argument("--out", required=True, metavar="DIR",
                     help="output folder: REPORT.md, report.html, figures, diagnosis.json")
    dia.add_argument("--seeds", type=int, default=2, help="models per modality (default 2)")
    dia.add_argument("--epochs", type=int, default=20,
                     help="most epochs of each model (early stopping, patience 3; default 20)")
    dia.add_argument("--pilot", action="store_true",
                     help="also train no-KD / KD / C2KD students on the student modality, "
                          "--seeds each, and give the measured verdicts beside the predicted")
    dia.add_argument("--pilot-epochs", type=int, help="epochs of the pilot's students "
                                                      "(default: --epochs)")
    dia.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    dia.add_argument("--cache", help=where)
    _executor_options(dia, "scale out (what trains the models; README 'Scale out')")
    args = parser.parse_args(argv)
    if args.command == "diagnose":
        return diagnose_command(args)
    if args.command == "reproduce":
        from cmkd.reproduce import reproduce

        return reproduce(args.profile, args.only, args.force, overrides=args.overrides,
                         refresh_jobs=args.refresh_jobs, executor=_executor_choice(args),
                         tensorboard=args.tensorboard)
    if args.command == "refresh-notebooks":
        from cmkd.reproduce import refresh_notebooks

        return refresh_notebooks(args.only)
    if args.command == "datasets":
        return datasets_status(args.root)
    if args.command == "cache":
        if args.cache_command == "list":
            return cache_list(args.cache)
        if args.cache_command == "verify":
            return cache_verify(args.cache, args.fix, args.strict, args.seal)
        return cache_prune(args.cache, args.older_than, args.all, args.dry_run, args.force)
    return 2  # pragma: no cover


def diagnose_command(args) -> int:
    """`cmkd diagnose`: run :func:`cmkd.diagnose.diagnose`, print the verdicts; bad input is one
    message on stderr (status 2) before any training."""
    from cmkd.data.files import DatasetError
    from cmkd.diagnose import WORDS, DiagnoseError, Settings, diagnose

    settings = Settings(seeds=args.seeds, epochs=args.epochs, pilot=args.pilot,
                        pilot_epochs=args.pilot_epochs, device=args.device, cache=args.cache)
    try:
        result = diagnose(args.source, args.teacher, args.student, root=args.root,
                          out=args.out, settings=settings, executor=_executor_choice(args))
    except (DiagnoseError, DatasetError, NotADirectoryError) as err:
        print(f"{err}" if str(err).startswith("cmkd") else f"cmkd diagnose: {err}",
              file=sys.stderr)
        return 2
    for d in result["directions"]:
        print(f"{d['teacher']} -> {d['student']}: KD {WORDS[d['kd']['verdict']]}, C2KD "
              f"{WORDS[d['c2kd']['verdict']]} ({d['kd']['reason']})")
        if "pilot" in d:
            p = d["pilot"]
            print(f"  pilot: KD - no KD {p['kd']['text']} ({p['kd']['verdict']}); C2KD - no KD "
                  f"{p['c2kd']['text']} ({p['c2kd']['verdict']})")
    print(f"report: {args.out}/REPORT.md, {args.out}/report.html, {args.out}/diagnosis.json")
    return 0


def _executor_options(parser, title: str) -> None:
    """The --executor, --workers, --scheduler, --cluster, --retries options (of reproduce and
    diagnose; :func:`_executor_choice` reads them)."""
    ex = parser.add_argument_group(title)
    ex.add_argument("--executor", choices=("serial", "local", "dask"),
                    help="what trains the jobs: serial (in the notebook's or command's "
                         "process), local (a Dask cluster on this machine: one worker per GPU, "
                         "else --workers CPU workers) or dask (--scheduler or --cluster); "
                         "default: $CMKD_EXECUTOR, else each notebook's own choice (diagnose: "
                         "serial).  Never changes a result")
    ex.add_argument("--workers", type=int, metavar="N",
                    help="local: worker processes (default: one per visible GPU, else 2)")
    where_ = ex.add_mutually_exclusive_group()
    where_.add_argument("--scheduler", metavar="ADDRESS",
                        help="dask: a running Dask scheduler (tcp://host:8786)")
    where_.add_argument("--cluster", metavar="FILE",
                        help="dask: a cluster file (YAML: kind: slurm, jobs: N, queue, cores, "
                             "memory, walltime, job_extra_directives, job_script_prologue)")
    ex.add_argument("--retries", type=int, default=2, metavar="N",
                    help="local, dask: extra tries of a job that raised (default 2)")


def _executor_choice(args):
    """The --executor options as a :class:`cmkd.jobs.cluster.ExecutorChoice` (None: none
    given); checked by ``reproduce`` before anything runs."""
    from cmkd.jobs.cluster import ExecutorChoice

    given = (args.executor, args.workers, args.scheduler, args.cluster)
    if all(v is None for v in given):
        return None
    return ExecutorChoice(kind=args.executor or "serial", workers=args.workers,
                          scheduler=args.scheduler, cluster=args.cluster, retries=args.retries)


def datasets_status(root: str) -> int:
    """Print found / missing / malformed per real dataset, with what is wrong; exit status 0.

    A ``root`` that does not exist or is not a folder is said in one line on stderr (status 2).
    """
    from cmkd.data import EMBEDDED, status

    try:
        rows = status(root)
    except (FileNotFoundError, NotADirectoryError) as err:
        print(f"cmkd datasets: {err}", file=sys.stderr)
        return 2
    print(f"datasets under {root}:")
    for row in rows:
        print(f"  {row['name']:<11} {row['status']:<9} {row['folder']}  (parameter "
              f"{row['param']})")
        if row["status"] == "malformed":
            for problem in row["problems"]:
                print(f"      - {problem}")
    print(f"embedded (always available): {', '.join(EMBEDDED)}")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _cache_root(cache: str | None, command: str):
    """The cache folder, or None after saying on stderr why it cannot be one."""
    from cmkd.jobs.cache import cache_dir

    try:
        return cache_dir(cache)
    except (NotADirectoryError, FileNotFoundError) as err:
        print(f"cmkd cache {command}: {err}", file=sys.stderr)
        return None


def _what(e: dict) -> str:
    seed = "" if e["seed"] is None else f" seed {e['seed']}"
    return f"{e['kind'] or '?'} {e['dataset'] or '?'} {e['method'] or '?'}{seed}"


def cache_list(cache: str | None) -> int:
    """Print one line per job folder of the cache (incomplete ones marked); exit status 0.
    Nothing is verified here (``cmkd cache verify`` is)."""
    from cmkd.jobs.cache import QUARANTINE, entries, quarantined

    root = _cache_root(cache, "list")
    if root is None:
        return 2
    rows = entries(root)
    finished = [e for e in rows if e["complete"]]
    legacy = sum(not e["manifest"] for e in finished)
    note = (f" ({legacy} stored before checksums; `cmkd cache verify --seal` adds them)"
            if legacy else "")
    print(f"job cache {root}: {len(finished)} finished job(s){note}")
    aside = quarantined(root)
    if aside:
        print(f"{len(aside)} bad folder(s) in {root / QUARANTINE}, "
              f"{_size(sum(e['size'] for e in aside))} (`cmkd cache prune` removes them)")
    if not rows:
        return 0
    print(f"  {'key':<12}  {'kind':<7}  {'dataset':<11}  {'method':<12}  {'seed':>4}  "
          f"{'size':>9}  {'age':>5}")
    for e in rows:
        state = "" if e["complete"] else ("  (being written)" if e["live"] else "  (incomplete)")
        seed = "" if e["seed"] is None else str(e["seed"])
        print(f"  {e['key'][:12]:<12}  {e['kind'] or '?':<7}  {e['dataset'] or '?':<11}  "
              f"{e['method'] or '?':<12}  {seed:>4}  {_size(e['size']):>9}  "
              f"{_age(e['age']):>5}{state}")
    total = sum(e["size"] for e in rows)
    print(f"  total {_size(total)}")
    return 0


def cache_verify(cache: str | None, fix: bool, strict: bool, seal: bool) -> int:
    """Check every finished job of the cache (``cmkd.jobs.cache.check``): one line per bad one
    and a summary; with ``fix`` the bad ones are moved to quarantine/ (trained again by the next
    run).  Exit status 1 if any was bad (moved or not), 2 if the cache cannot be a folder."""
    from cmkd.jobs.cache import QUARANTINE, quarantined, verify

    root = _cache_root(cache, "verify")
    if root is None:
        return 2
    rows = verify(root, fix=fix, strict=strict, seal_legacy=seal)
    bad = [e for e in rows if e["state"] == "bad"]
    for e in bad:
        moved = f"; moved to {QUARANTINE}/{e['moved'].name}" if e["moved"] is not None else ""
        print(f"bad {e['key'][:12]} ({_what(e)}): {e['problem']}{moved}")
    ok = sum(e["state"] == "ok" for e in rows)
    legacy = sum(e["state"] == "legacy" for e in rows)
    sealed = sum(e["state"] == "ok" and not e["manifest"] for e in rows)
    parts = [f"{ok} verified"]
    if sealed:
        parts[0] += f" ({sealed} sealed now)"
    if legacy:
        parts.append(f"{legacy} stored before checksums (checked without them; --seal adds "
                     f"them, --strict counts them as bad)")
    parts.append(f"{len(bad)} bad")
    if bad:
        moved = sum(e["moved"] is not None for e in bad)
        parts[-1] += (f", {moved} moved to {QUARANTINE}/" if fix else
                      " (--fix moves them aside, `cmkd cache prune` removes them)")
    aside = len(quarantined(root))
    if aside:
        parts.append(f"{aside} in {QUARANTINE}/")
    print(f"job cache {root}: {len(rows)} finished job(s): {', '.join(parts)}")
    return 1 if bad else 0


def reproduce_running() -> list[str]:
    """The ``cmkd reproduce`` runs of this project holding their profile's lock now (each as
    'profile <name>, pid <pid>'); a shared lock is tried and released at once."""
    import fcntl

    from cmkd.jobs.cache import project_root

    root = project_root()
    held = []
    for lock in sorted((root / "reports").glob("*/.lock")):  # every profile that ever ran
        profile = lock.parent.name
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            held.append(f"profile {profile}, pid {pid}")
        except OSError:
            pass
        finally:
            os.close(fd)  # releases the shared lock, if it was taken
    return held


def cache_prune(cache: str | None, older_than: float | None, everything: bool,
                dry_run: bool, force: bool = False) -> int:
    """Remove incomplete, bad and quarantined folders (and old or all finished jobs); say what
    goes.  Finished jobs are not removed while a ``cmkd reproduce`` of the project runs or a job
    is being written into the cache, unless ``force`` (status 1)."""
    from cmkd.jobs.cache import entries, prune

    root = _cache_root(cache, "prune")
    if root is None:
        return 2
    if older_than is not None and older_than < 0:
        print(f"cmkd cache prune: older_than_days must be >= 0, got {older_than}",
              file=sys.stderr)
        return 2
    users = [f"cmkd reproduce ({who})" for who in reproduce_running()]
    writing = sum(e["live"] for e in entries(root, incomplete_only=True))
    if writing:
        users.append(f"{writing} job(s) being written")
    if users and not force and not dry_run and (everything or older_than is not None):
        print(f"cmkd cache prune: the cache {root} is in use ({'; '.join(users)}); finished "
              f"jobs are not removed now (a running notebook may be about to read them). Wait "
              f"for it to finish, or add --force", file=sys.stderr)
        return 1
    if users:
        print(f"cmkd cache prune: warning: the cache is in use ({'; '.join(users)})",
              file=sys.stderr)
    gone = prune(root, older_than, everything, dry_run)
    verb = "would remove" if dry_run else "removed"
    for e in gone:
        if e["state"] == "bad":
            what = f"bad: {e['problem']}"
        elif e["state"] == "quarantined":
            what = f"in quarantine/, {e['problem'] or 'reason unknown'}"
        else:
            what = "finished" if e["complete"] else "incomplete"
        print(f"{verb} {e['key'][:12]} ({what}, {e['kind'] or '?'} {e['method'] or '?'}, "
              f"{_size(e['size'])})")
    print(f"{verb} {len(gone)} folder(s), {_size(sum(e['size'] for e in gone))} from {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
