"""The one place that styles figures, saves figures and tables under reports/<profile>/, holds the
papers' published values and writes REPORT.md.

Claims are recorded as each notebook's ``claims(df)`` scored them: artefact, claim, evidence, the
95% interval behind the verdict, and the verdict (held / NOT held / undecided; the rule and its
statistics live in :mod:`cmkd.verdicts`).  Records made before verdicts existed (a boolean
``held``, no ``verdict``) still render: held or NOT held, interval "not recorded".

Every write is atomic (a temporary file in the same folder, then a rename) and deterministic
(no dates, fixed SVG hash salt, rounded numbers), so rerunning a profile leaves git clean.

A profile is any folder params/<name>/ (:func:`profiles`); its report is reports/<name>/.  Only
``cmkd reproduce`` publishes there: a notebook run anywhere else (JupyterLab, nbval, ``make
notebooks``) writes to reports/<name>/scratch/ (:func:`scratch_dir`, git-ignored) and says so.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from functools import cache
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

from cmkd.verdicts import CLAIM_COLUMNS, HELD, NOT_HELD, VERDICTS

#: Folders of reports/ that are not profiles (the benchmarks write reports/bench/).
NOT_PROFILES = ("bench",)
#: The folder of reports/<profile>/ that interactive runs write to.
SCRATCH = "scratch"
_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
DECIMALS = 2
COLORS = {"teacher_acc": "#4C72B0", "nokd_acc": "#8C8C8C", "kd_acc": "#DD8452",
          "paper": "#C44E52"}
_REFERENCE_DIR = Path(__file__).parent / "reference"


# ----------------------------------------------------------------------------- paths
def repo_root() -> Path:
    """The project folder: $CMKD_ROOT, else the nearest folder above the working directory that
    holds params/ and notebooks/, else the checkout this package was installed from."""
    env = os.environ.get("CMKD_ROOT")
    if env:
        return Path(env).resolve()
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "params").is_dir() and (folder / "notebooks").is_dir():
            return folder
    here = Path(__file__).resolve().parents[2]
    if (here / "params").is_dir():
        return here
    raise FileNotFoundError("cannot find the cmkd project folder (one holding params/ and "
                            "notebooks/); run from inside it or set CMKD_ROOT")


def check_profile_name(profile: str) -> str:
    """``profile`` when it can name a folder of params/ and reports/ (letters, digits, '_', '.',
    '-'; not starting with '.' or '-'; not reports/bench, the benchmarks'); else ValueError."""
    if not isinstance(profile, str) or not _PROFILE_NAME.fullmatch(profile):
        raise ValueError(f"a profile is the name of a folder of params/ (letters, digits, '_', "
                         f"'.', '-'), got {profile!r}")
    if profile in NOT_PROFILES:
        raise ValueError(f"{profile!r} cannot be a profile: reports/{profile}/ is the "
                         "benchmarks' folder")
    return profile


def profiles(root: Path | None = None) -> list[str]:
    """The profiles of the project: the names of the folders under params/, sorted."""
    folder = (root or repo_root()) / "params"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir()
                  and _PROFILE_NAME.fullmatch(p.name) and p.name not in NOT_PROFILES)


def reports_dir(profile: str, root: Path | None = None) -> Path:
    """reports/<profile>/: what `cmkd reproduce` publishes for that profile."""
    return (root or repo_root()) / "reports" / check_profile_name(profile)


def scratch_dir(profile: str, root: Path | None = None) -> Path:
    """reports/<profile>/scratch/: where a notebook run outside `cmkd reproduce` writes."""
    return reports_dir(profile, root) / SCRATCH


# ----------------------------------------------------------------------------- atomic writes
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The file gets the mode an ordinary write would give it (0666 less the umask), not the
    0600 of a temporary file.  An OSError that names no file (a full disk while writing) is
    given ``path`` as its file name, so that a message can say where."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:
            err.filename = str(path)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------- figures
def style() -> None:
    """The project's figure style, with the settings that make saved files reproducible."""
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", font_scale=1.0)
    matplotlib.rcParams.update({"svg.hashsalt": "cmkd", "svg.fonttype": "path",
                                "figure.dpi": 100, "savefig.dpi": 150,
                                "savefig.bbox": "tight", "axes.titlesize": 10})


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 6.0, height: float = 4.0, **kw):
    """A styled matplotlib Figure (not registered with pyplot, so a notebook shows it only when
    the cell returns it) and its axes."""
    style()
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, **kw)
    return fig, axes


def plotted(values, digits: int = 4, floor: float | None = None) -> np.ndarray:
    """Values as a figure should draw them: rounded to ``digits`` significant digits and, with
    ``floor``, raised to it.  Saved figures then do not depend on the last bits of
    floating-point arithmetic (BLAS thread counts, another CPU), so a committed figure is the
    same on any machine: use it wherever a plotted quantity is computed in floating point and
    may sit at rounding-noise level (relative errors near 1e-15, risks that flow to zero)."""
    values = np.asarray(values, dtype=float)
    if floor is not None:
        values = np.maximum(values, floor)
    out = np.zeros_like(values)
    nonzero = np.isfinite(values) & (values != 0)
    scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(values[nonzero]))))
    out[nonzero] = np.round(values[nonzero] * scale) / scale
    out[~np.isfinite(values)] = values[~np.isfinite(values)]
    return out


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    buf = io.BytesIO()
    metadata = {"svg": {"Date": None}, "png": {"Software": None}, "pdf": {"CreationDate": None}}
    fig.savefig(buf, format=fmt, metadata=metadata.get(fmt))
    return buf.getvalue()


# ----------------------------------------------------------------------------- paper values
@cache
def paper_values() -> dict[str, dict]:
    """Every published number under cmkd/reference/*.yaml, by id."""
    out: dict[str, dict] = {}
    for path in sorted(_REFERENCE_DIR.glob("*.yaml")):
        for entry in yaml.safe_load(path.read_text()) or []:
            if entry["id"] in out:
                raise ValueError(f"duplicate reference id {entry['id']!r} in {path.name}")
            out[entry["id"]] = dict(entry, file=path.name)
    return out


def paper_value(key: str) -> dict:
    try:
        return paper_values()[key]
    except KeyError:
        raise KeyError(f"no published value with id {key!r} under cmkd/reference/") from None


def paper_entry(**fields) -> dict | None:
    """The published number whose fields equal ``fields`` (e.g. ``table=3, dataset='ave',
    direction='a2v', method='c2kd', variant='full'``; a field the entry lacks counts as None),
    or None when the papers publish none; ValueError when several match (the fields do not
    identify one number)."""
    found = [e for e in paper_values().values()
             if all(e.get(k) == v for k, v in fields.items())]
    if len(found) > 1:
        raise ValueError(f"{len(found)} published values match {fields}: "
                         f"{', '.join(e['id'] for e in found[:5])}")
    return found[0] if found else None


def compare_with_paper(measured: dict[str, dict[str, tuple[float, float]]]) -> pd.DataFrame:
    """Ours beside the paper's value.

    Parameters
    ----------
    measured : variant -> {reference id -> (mean, std over runs)}; the variant names how ours
        was computed (for example the paper's equation or an official-code option).

    A difference is 'within spread' when it is no larger than our standard deviation over runs.
    """
    rows = []
    for variant, values in measured.items():
        for key, (mean, std) in values.items():
            ref = paper_value(key)
            diff = mean - ref["value"]
            rows.append({"artefact": ref["artefact"], "quantity": ref["quantity"],
                         "ours_variant": variant, "paper": ref["value"], "ours": mean,
                         "ours_std": std, "difference": diff,
                         "within_spread": bool(abs(diff) <= std), "unit": ref.get("unit", ""),
                         "id": key})
    cols = ["artefact", "quantity", "ours_variant", "paper", "ours", "ours_std", "difference",
            "within_spread", "unit", "id"]
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------- tables
def _rounded(df: pd.DataFrame, decimals: int = DECIMALS) -> pd.DataFrame:
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].round(decimals)
    return out


def markdown_table(df: pd.DataFrame, decimals: int = DECIMALS) -> str:
    return _rounded(df, decimals).to_markdown(index=False, floatfmt=f".{decimals}f")


# ----------------------------------------------------------------------------- the report
#: Set by ``cmkd reproduce`` for the kernel: the folder a run's artefacts are staged in (laid
#: out as reports/<profile>/), published only when the notebook finishes.
STAGING_ENV = "CMKD_STAGING"
RUN_FILE = "run.json"


class Report:
    """Where one notebook's artefacts go, and the record REPORT.md is built from.

    Parameters
    ----------
    notebook : the notebook's file stem, e.g. '01_mvd_synthetic_sweeps'
    profile : the profile, a folder of params/ ('smoke', 'default', 'paper', ...)
    title : a line naming the paper artefacts the notebook reproduces

    Under ``cmkd reproduce`` (``$CMKD_STAGING`` set) every file goes to the staging folder and
    the kernel's peak memory is noted beside it; reproduce publishes them in reports/<profile>/
    when the notebook has finished.  Anywhere else (JupyterLab, nbval, ``make notebooks``) the
    run is a scratch run: files go to reports/<profile>/scratch/ (git-ignored), never to the
    published report; each "saved ..." line names the scratch folder.  Nothing is written
    before the first figure or table, so an interrupted run leaves no empty record behind.
    """

    def __init__(self, notebook: str, profile: str, title: str, root: Path | None = None):
        self.root = root or repo_root()
        staging = os.environ.get(STAGING_ENV)
        self.staged = bool(staging)
        if staging:
            self.dir = reports_dir(profile, self.root)
            self.write_dir = Path(staging)
        else:
            self.dir = self.write_dir = scratch_dir(profile, self.root)
        self.notebook, self.profile = notebook, profile
        self.record = {"notebook": notebook, "title": title, "profile": profile,
                       "source": f"notebooks/{notebook}.ipynb",
                       "params": f"params/{profile}/{notebook}.yaml",
                       "figures": [], "tables": [], "comparisons": [], "claims": []}

    def _rel(self, path: Path) -> str:
        """Where a written file is published, relative to the project (what a reader opens)."""
        published = self.dir / path.relative_to(self.write_dir)
        return published.relative_to(self.root).as_posix()

    def _add(self, kind: str, entry: dict) -> None:
        items = [e for e in self.record[kind] if e.get("name") != entry.get("name")]
        self.record[kind] = items + [entry]
        self._write_record()

    def _write_record(self) -> None:
        path = self.write_dir / "manifest" / f"{self.notebook}.json"
        atomic_write_text(path, json.dumps(self.record, indent=1, sort_keys=True) + "\n")
        if self.staged:
            from cmkd.provenance import peak_memory

            atomic_write_text(self.write_dir / RUN_FILE, json.dumps(peak_memory()) + "\n")

    def save_figure(self, fig: Figure, name: str, caption: str, reproduces: str,
                    formats: tuple[str, ...] = ("png", "svg")) -> str:
        """Save ``fig`` as reports/<profile>/figures/<name>.<fmt>; returns a line naming them."""
        paths = []
        for fmt in formats:
            path = self.write_dir / "figures" / f"{name}.{fmt}"
            atomic_write_bytes(path, figure_bytes(fig, fmt))
            paths.append(path)
        self._add("figures", {"name": name, "caption": caption, "reproduces": reproduces,
                              "files": [p.relative_to(self.write_dir).as_posix()
                                        for p in paths]})
        return "saved " + ", ".join(self._rel(p) for p in paths)

    def save_table(self, df: pd.DataFrame, name: str, caption: str, reproduces: str,
                   decimals: int = DECIMALS) -> pd.DataFrame:
        """Save ``df`` rounded to ``decimals`` as CSV and Markdown; returns the rounded table."""
        rounded = _rounded(df, decimals)
        csv = self.write_dir / "tables" / f"{name}.csv"
        md = self.write_dir / "tables" / f"{name}.md"
        atomic_write_text(csv, rounded.to_csv(index=False, float_format=f"%.{decimals}f"))
        atomic_write_text(md, f"{caption}\n\n{markdown_table(df, decimals)}\n")
        self._add("tables", {"name": name, "caption": caption, "reproduces": reproduces,
                             "files": [csv.relative_to(self.write_dir).as_posix(),
                                       md.relative_to(self.write_dir).as_posix()]})
        return rounded

    def compare(self, measured: dict[str, dict[str, tuple[float, float]]]) -> pd.DataFrame:
        """Record ours beside the paper's published values (see :func:`compare_with_paper`);
        returns the rounded comparison."""
        table = compare_with_paper(measured)
        self.record["comparisons"] = json.loads(_rounded(table).to_json(orient="records"))
        self._write_record()
        return _rounded(table)

    def claims(self, claims: pd.DataFrame) -> pd.DataFrame:
        """Record a notebook's claims (columns :data:`cmkd.verdicts.CLAIM_COLUMNS`: artefact,
        claim, evidence, interval, verdict); returns them for display."""
        table = claims_table(claims)
        self.record["claims"] = json.loads(table.to_json(orient="records"))
        self._write_record()
        return table


def format_overrides(overrides: dict) -> str:
    """``--set`` overrides as REPORT.md shows them: 'epochs=3, datasets=["avdigits"]'."""
    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                     for k, v in overrides.items())


def _nb_section(rec: dict, profile: str, root: Path | None, stale: str | None) -> list[str]:
    nb = rec["notebook"]
    flag = " (stale)" if stale else ""
    overrides = (f" · overrides: {format_overrides(rec['overrides'])}"
                 if rec.get("overrides") else "")
    lines = [f'<a id="{nb}"></a>', "", f"## {nb}: {rec['title']}{flag}", ""]
    if stale:
        lines += [f"> **Stale**: {stale}; `cmkd reproduce --profile {profile} --only "
                  f"{nb.split('_', 1)[0]}` redoes them.", ""]
    lines += [f"Notebook: [{rec['source']}](../../{rec['source']}) · params: "
              f"[{rec['params']}](../../{rec['params']}){overrides} · executed copy: "
              f"`reports/{profile}/notebooks/{nb}.ipynb` (made by `cmkd reproduce`, not "
              "committed)", ""]
    for fig in rec["figures"]:
        png = next((f for f in fig["files"] if f.endswith(".png")), fig["files"][0])
        others = ", ".join(f"[{Path(f).suffix[1:]}]({f})" for f in fig["files"])
        lines += [f"**{fig['reproduces']}**: {fig['caption']} ({others})", "",
                  f"![{fig['caption']}]({png})", ""]
    for tab in rec["tables"]:
        lines += [f"**{tab['reproduces']}**: {tab['caption']} "
                  f"({', '.join(f'[{Path(f).suffix[1:]}]({f})' for f in tab['files'])})", ""]
        csv = reports_dir(profile, root) / next(f for f in tab["files"] if f.endswith(".csv"))
        if csv.is_file():
            lines += [markdown_table(pd.read_csv(csv)), ""]
    if rec["comparisons"]:
        lines += ["Paper beside ours:", "", _comparison_md(rec["comparisons"]), ""]
    if rec["claims"]:
        lines += ["Claims checked:", "", _claims_md(rec["claims"]), ""]
    return lines


def _comparison_md(rows: list[dict]) -> str:
    df = pd.DataFrame(rows)
    df["ours"] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(df.ours, df.ours_std)]
    df["within spread"] = np.where(df.within_spread, "yes", "no")
    df = df.rename(columns={"ours_variant": "how ours was computed"})
    df = df[["artefact", "quantity", "how ours was computed", "paper", "ours", "difference",
             "within spread", "unit"]]
    return markdown_table(df)


def claims_table(claims: pd.DataFrame | list[dict]) -> pd.DataFrame:
    """Claims with the columns :data:`cmkd.verdicts.CLAIM_COLUMNS`.  A record from before
    verdicts (a boolean ``held``, no ``verdict``) becomes held / NOT held with the interval
    "not recorded"; a verdict outside held / NOT held / undecided is a ValueError."""
    df = pd.DataFrame(claims).copy()
    if "verdict" not in df.columns:
        if "held" not in df.columns:
            raise ValueError("claims need a 'verdict' column (cmkd.verdicts)")
        df["verdict"] = None
    df["verdict"] = df["verdict"].astype(object)
    if "held" in df.columns:  # records from before verdicts, alone or beside newer ones
        old = df["verdict"].isna() & df["held"].notna()
        df.loc[old, "verdict"] = [HELD if bool(h) else NOT_HELD for h in df.loc[old, "held"]]
    if "interval" not in df.columns:
        df["interval"] = "not recorded"
    df["interval"] = df["interval"].fillna("not recorded")
    bad = sorted(set(df["verdict"]) - set(VERDICTS))
    if bad:
        raise ValueError(f"unknown verdict(s) {bad}; a verdict is one of {VERDICTS}")
    return df.reindex(columns=CLAIM_COLUMNS).reset_index(drop=True)


def _claims_md(rows: list[dict]) -> str:
    return claims_table(rows).to_markdown(index=False, disable_numparse=True)


def _verdict_counts(rows: list[dict]) -> str:
    counts = claims_table(rows)["verdict"].value_counts()
    return ", ".join(f"{int(counts.get(v, 0))} {v}" for v in VERDICTS)


def _environment_md(records: list[dict]) -> list[str]:
    """REPORT.md's environment section: what produced each notebook's artefacts."""
    rows = []
    for rec in records:
        prov = rec.get("provenance")
        if not prov:
            rows.append({"notebook": rec["notebook"], "commit": "not recorded (not made by "
                         "cmkd reproduce)"})
            continue
        commit = (prov.get("commit") or "no git")[:10] + (" (dirty)" if prov.get("dirty") else "")
        mem = f"{prov['peak_rss_mib']:.0f}" if prov.get("peak_rss_mib") is not None else ""
        if prov.get("peak_cuda_mib") is not None:
            mem += f" (CUDA {prov['peak_cuda_mib']:.0f})"
        rows.append({"notebook": rec["notebook"], "commit": commit,
                     "lock": (prov.get("lock_sha256") or "none")[:12],
                     "python": prov.get("python"), "torch": prov.get("torch"),
                     "CUDA build": prov.get("cuda") or "none", "device": prov.get("device"),
                     "platform": prov.get("platform"), "CPU": prov.get("cpu") or "",
                     "wall time (s)": f"{prov['wall_seconds']:.1f}",
                     "peak memory (MiB)": mem})
    if not rows:
        return []
    return ["## Environment", "",
            "What produced each notebook's artefacts (recorded by `cmkd reproduce`): the commit "
            "(*dirty*: the checkout had uncommitted changes), the first 12 hex digits of "
            "requirements.lock's sha256, the versions, the device and CPU (CPU kernels round "
            "differently on other processors, so trained numbers can move in their last digits "
            "there), and the run's wall time and "
            "peak resident memory of its kernel. A rerun that reproduces every artefact "
            "byte for byte keeps the record of the run that first made them.", "",
            pd.DataFrame(rows).fillna("").to_markdown(index=False, disable_numparse=True), ""]


def write_report(profile: str, notebooks: list[str], root: Path | None = None,
                 failed: dict[str, str] | None = None,
                 stale: dict[str, str] | None = None) -> Path:
    """Write reports/<profile>/REPORT.md from the records of ``notebooks`` (in that order).

    ``failed``: the notebooks that failed in this run, with what failed; ``stale``: the
    notebooks whose published artefacts no longer match what made them (params changed, last
    run failed, files edited), with why: flagged in the Contents list and their section."""
    out_dir = reports_dir(profile, root)
    failed = failed or {}
    stale = stale or {}
    records = []
    for nb in notebooks:
        path = out_dir / "manifest" / f"{nb}.json"
        if path.is_file():
            records.append(json.loads(path.read_text()))
    lines = [f"# cmkd report: profile `{profile}`", "",
             f"Regenerate with `cmkd reproduce --profile {profile}` (or `make reproduce "
             f"PROFILE={profile}`). Every artefact below names the notebook and params file that "
             "made it; where a paper publishes a number, the paper's value stands beside ours. "
             "A difference is *within spread* when it is no larger than our standard deviation "
             "over runs. Each qualitative claim is scored on a 95% confidence interval for its "
             "effect (a difference of accuracies, a slope), built from the spread over seeds or "
             "runs plus, where every run is scored on the same test set, that set's sampling "
             "error: *held* when the interval lies on the claim's side of zero (or of the claim's "
             "threshold or margin), *NOT held* when it lies on the other side, *undecided* when "
             "it straddles (the rule: `cmkd.verdicts`). The *interval* column is the interval "
             "behind the verdict (for a claim with several parts, the part that decides it; the "
             "evidence lists every part).", ""]
    if profile == "smoke":
        lines += ["> **Smoke profile: these numbers check the plumbing only** (tiny data and few "
                  "epochs); they are not results and say nothing about the papers' claims.", ""]
    if failed:
        lines += ["**Failed in the last run** (artefacts below may be stale):", ""]
        lines += [f"- {nb}: {why}" for nb, why in failed.items()] + [""]
    flagged = [r["notebook"] for r in records if r["notebook"] in stale]
    if flagged:
        lines += ["**Stale** (their artefacts no longer match their params, or their last run "
                  "failed; the scorecard below still counts them): "
                  + ", ".join(f"[{nb}](#{nb})" for nb in flagged), ""]
    comps = [c for r in records for c in r["comparisons"]]
    claims = [c for r in records for c in r["claims"]]
    lines += ["## Scorecard", ""]
    if comps:
        lines += ["Published numbers:", "", _comparison_md(comps), ""]
    if claims:
        lines += [f"Qualitative claims ({_verdict_counts(claims)}):", "", _claims_md(claims),
                  ""]
    if not comps and not claims:
        lines += ["(nothing recorded yet)", ""]
    lines += ["## Contents", ""]
    for rec in records:
        why = stale.get(rec["notebook"])
        flag = f" **(stale: {why})**" if why else ""
        lines.append(f"- [{rec['notebook']}](#{rec['notebook']}): {rec['title']}{flag}")
    lines += [""]
    lines += _environment_md(records)
    for rec in records:
        lines += _nb_section(rec, profile, root, stale.get(rec["notebook"]))
    path = out_dir / "REPORT.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path
