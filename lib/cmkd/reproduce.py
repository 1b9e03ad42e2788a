"""`cmkd reproduce`: run the numbered notebooks with papermill on a profile and write REPORT.md.

For each selected notebook: validate params/<profile>/<notebook>.yaml (all of them, before any
compute), skip it when its inputs (notebook, params file, cmkd source) are unchanged since its last
successful run, else execute it with papermill into reports/<profile>/notebooks/.  A failing
notebook is reported by name and cell while the others still run; the exit code says whether all
succeeded.  ``refresh_notebooks`` (``make notebooks``) regenerates the stored smoke outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from cmkd.params import ParamError, load_params
from cmkd.reporting import PROFILES, atomic_write_text, repo_root, reports_dir, write_report

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
    """Hash of what a notebook's results depend on: the notebook, its params file and cmkd."""
    h = hashlib.sha256()
    files = [root / "notebooks" / f"{notebook}.ipynb",
             root / "params" / profile / f"{notebook}.yaml"]
    lib = Path(__file__).resolve().parent
    files += sorted(p for p in lib.rglob("*") if p.suffix in (".py", ".yaml", ".csv")
                    and "__pycache__" not in p.parts)
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


def validate_all(root: Path, profile: str, notebooks: list[str]) -> dict[str, dict]:
    """Read and validate every selected params file; returns the raw values per notebook."""
    from cmkd.experiments import NOTEBOOKS, module_for
    from cmkd.params import read_yaml

    errors, values = [], {}
    for nb in notebooks:
        rel = f"params/{profile}/{nb}.yaml"
        if nb not in NOTEBOOKS:
            errors.append(f"{rel}: notebook {nb} has no experiment module registered in "
                          "cmkd.experiments.NOTEBOOKS, so its parameters cannot be checked")
            continue
        try:
            load_params(root / rel, module_for(nb).Config, rel)
            values[nb] = read_yaml(root / rel)
        except ParamError as err:
            errors.append(str(err))
    if errors:
        raise SystemExit("cmkd reproduce: invalid parameters, nothing was run:\n  "
                         + "\n  ".join(errors))
    return values


def _run_one(root: Path, profile: str, nb: str, params: dict) -> None:
    import papermill as pm

    out_dir = reports_dir(profile, root) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{nb}.", suffix=".ipynb")
    os.close(fd)
    try:
        pm.execute_notebook(str(root / "notebooks" / f"{nb}.ipynb"), tmp,
                            parameters=dict(params, profile=profile), kernel_name=KERNEL,
                            cwd=str(root / "notebooks"), progress_bar=False, log_output=False)
        os.replace(tmp, out_dir / f"{nb}.ipynb")
    except BaseException:
        failed = out_dir / f"{nb}.failed.ipynb"
        if os.path.exists(tmp):
            os.replace(tmp, failed)
        raise


def _describe_failure(err: BaseException) -> str:
    """Which cell failed and how: the cell's number in the executed notebook (counting the
    injected parameters cell), its first line, and the error."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(err, PapermillExecutionError):
        first = (err.source or "").strip().splitlines()[:1]
        line = f" `{first[0][:60]}`" if first else ""
        return f"cell {err.cell_index}{line}: {err.ename}: {err.evalue}"
    return f"{type(err).__name__}: {err}"


def reproduce(profile: str = "default", only: list[str] | None = None, force: bool = False,
              root: Path | None = None) -> int:
    """Run the selected notebooks on ``profile``; returns 0 when every one succeeded."""
    from tqdm.auto import tqdm

    if profile not in PROFILES:
        raise SystemExit(f"cmkd reproduce: --profile must be one of {', '.join(PROFILES)}")
    root = root or repo_root()
    available = discover(root)
    if not available:
        raise SystemExit(f"cmkd reproduce: no notebooks under {root / 'notebooks'}")
    chosen = select(available, only)
    params = validate_all(root, profile, chosen)
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
        start = time.perf_counter()
        try:
            with _environment(CMKD_ROOT=str(root)):
                _run_one(root, profile, nb, params[nb])
        except Exception as err:  # noqa: BLE001 - report and go on with the others
            failed[nb] = _describe_failure(err)
            summary.append((nb, f"FAILED at {failed[nb]}"))
            atomic_write_text(state_path, json.dumps({"inputs": digest, "ok": False}) + "\n")
            continue
        atomic_write_text(state_path, json.dumps({"inputs": digest, "ok": True}) + "\n")
        summary.append((nb, f"ok in {time.perf_counter() - start:.1f} s"))
    bar.close()
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
            NotebookClient(nb, kernel_name=KERNEL, timeout=1800,
                           resources={"metadata": {"path": str(py.parent)}}).execute()
        nbformat.write(nb, ipynb)
        subprocess.run([sys.executable, "-m", "nbstripout", "--keep-output", "--keep-count",
                        str(ipynb)], check=True)
    return 0
