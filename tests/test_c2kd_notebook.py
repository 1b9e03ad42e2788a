"""Notebook 06's paper-profile code path, end to end through `cmkd reproduce` and papermill, on
tiny fixture datasets in the real on-disk layouts of CREMA-D, AVE and VGGSound (ResNet-18s, a
few clips, one epoch, small frames) and CrisisMMD (MLPs on the features of stub encoders given by
import path, tests/stub_encoders.py); and a missing dataset or encoder stopping the paper profile
at once."""
import dataclasses
import functools
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import stub_encoders
from cmkd import methods
from cmkd.experiments import c2kd_benchmark as c2
from cmkd.params import ParamError, load_params
from cmkd.reporting import paper_entry, paper_values
from cmkd.reproduce import reproduce, validate_all
from test_data_loaders import make_ave, make_cremad, make_crisismmd, make_vggsound

TESTS = Path(__file__).resolve().parent
STUBS = {"crisismmd_text_encoder": "stub_encoders:text",
         "crisismmd_image_encoder": "stub_encoders:image",
         "crisismmd_text_dim": stub_encoders.TEXT_DIM,
         "crisismmd_image_dim": stub_encoders.IMAGE_DIM}


@pytest.fixture
def project(root, tmp_path, monkeypatch):
    proj = tmp_path / "project"
    for sub in ("notebooks", "params"):
        shutil.copytree(root / sub, proj / sub)
    monkeypatch.setenv("CMKD_CACHE", str(tmp_path / "cache"))
    return proj


def _job_folders(cache: Path) -> list[Path]:
    """The job entries of a cache folder (named by their 64-hex key; not the data fingerprints
    or other bookkeeping kept beside them)."""
    return [p for p in cache.iterdir() if p.is_dir() and re.fullmatch(r"[0-9a-f]{64}", p.name)]


def _paper_params(proj, **change):
    path = proj / "params/paper/06_c2kd.yaml"
    values = dict(yaml.safe_load(path.read_text()), **change)
    path.write_text(yaml.safe_dump(values))
    return path


def test_paper_profile_on_fixture_datasets(project, tmp_path):
    data = tmp_path / "datasets"
    make_cremad(data / "CREMA-D")
    make_ave(data / "AVE_Dataset")
    make_vggsound(data / "VGGSound")
    _paper_params(project, datasets=["cremad", "ave", "vggsound"], n_seeds=1,
                  directions=["a2v"], sections=["table5"], epochs=1, teacher_epochs=1,
                  batch_size=4, image_size=32, workers=0, device="cpu",
                  # two worker processes: the ResNet-18 jobs on AVE's 257 x 1004 spectrograms
                  # are this suite's costliest; on 2 cores they take half the wall time
                  processes=2, cremad_root=str(data / "CREMA-D"),
                  ave_root=str(data / "AVE_Dataset"), vggsound_root=str(data / "VGGSound"))
    assert reproduce("paper", ["06"], root=project) == 0
    out = project / "reports/paper"
    table = (out / "tables/c2kd_table5.csv").read_text()
    for column in ("cremad Visual mean", "ave Visual mean", "vggsound Visual mean"):
        assert column in table
    manifest = json.loads((out / "manifest/06_c2kd.json").read_text())
    ids = {c["id"] for c in manifest["comparisons"]}
    # Table 5 publishes AVE and VGGSound (not CREMA-D): every row stands beside the paper's
    for dataset in ("ave", "vggsound"):
        for name in ("nokd", "kd", "c2kd_bd", "c2kd_bd_nt", "c2kd_bd_ofs", "c2kd_noproxy",
                     "c2kd"):
            assert f"c2kd_t5_{dataset}_a2v_{name}" in ids
    assert not any("cremad" in i for i in ids)
    assert "C2KD Table 5" in (out / "REPORT.md").read_text()
    cached = _job_folders(tmp_path / "cache")
    rows = len(c2.TABLE5)  # the paper's 7 rows, the documented choices and the control
    assert len(cached) == 3 * (rows + 1), "every row and one teacher per dataset, trained once"


def test_paper_profile_on_fixture_crisismmd(project, tmp_path, monkeypatch):
    """CrisisMMD with encoders given by import path: the text teacher distils into the image
    student (a2v: the paper's Image column, reference direction t2i)."""
    # the papermill kernel is another process: it must import the stub module too
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(TESTS)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    data = tmp_path / "datasets" / "CrisisMMD_v2.0"
    make_crisismmd(data)
    _paper_params(project, datasets=["crisismmd"], n_seeds=1, directions=["a2v"],
                  sections=["table5"], epochs=1, teacher_epochs=1, batch_size=4, image_size=32,
                  workers=0, processes=1, device="cpu", crisismmd_root=str(data), **STUBS)
    assert reproduce("paper", ["06"], root=project) == 0
    out = project / "reports/paper"
    table = (out / "tables/c2kd_table5.csv").read_text()
    assert "crisismmd Image mean" in table and "Visual" not in table
    manifest = json.loads((out / "manifest/06_c2kd.json").read_text())
    ids = {c["id"] for c in manifest["comparisons"]}
    for name in ("nokd", "kd", "c2kd_bd", "c2kd_bd_nt", "c2kd_bd_ofs", "c2kd_noproxy", "c2kd"):
        assert f"c2kd_t5_crisismmd_t2i_{name}" in ids
    assert not any("i2t" in i or "a2v" in i for i in ids)
    cached = _job_folders(tmp_path / "cache")
    assert len(cached) == len(c2.TABLE5) + 1, "every row and the text teacher, trained once"


def test_grid_maps_crisismmd_directions_to_text_and_image(root):
    config = load_params(root / "params/paper/06_c2kd.yaml", c2.Config)
    config = c2.Config(**{**config.__dict__, "datasets": ["crisismmd"], "sections": ["table5"],
                          "n_seeds": 1, **STUBS})
    jobs, tags = c2.grid(config)
    kd = {r.direction: jobs[r.job] for r in tags[tags.label == "(a) KD"].itertuples()}
    assert kd["a2v"].inputs == ("image",) and kd["a2v"].teacher.inputs == ("text",)
    assert kd["v2a"].inputs == ("text",) and kd["v2a"].teacher.inputs == ("image",)
    assert kd["a2v"].model == "mlp" and kd["a2v"].model_options["in_features"] == 12
    assert kd["a2v"].teacher.model_options["in_features"] == 16
    assert kd["a2v"].dataset_options["text_encoder"] == "stub_encoders:text"
    assert [c2.reference_direction("crisismmd", d) for d in ("a2v", "v2a")] == ["t2i", "i2t"]
    assert [c2.column("crisismmd", d) for d in ("a2v", "v2a")] == ["Image", "Text"]


@pytest.mark.parametrize("param, value, message", [
    ("crisismmd_text_encoder", "", "crisismmd_text_encoder is empty; set it to the import path "
                                   "'package.module:callable'"),
    ("crisismmd_image_encoder", "no_such_module_xyz:f", "cannot import module "
                                                         "'no_such_module_xyz'"),
    ("crisismmd_text_encoder", "stub_encoders", "not an import path"),
    ("crisismmd_text_encoder", "os:system", "'os:system' refused: its module is 'os'"),
    ("crisismmd_image_encoder", "subprocess:run", "'subprocess:run' refused: its module is "
                                                  "'subprocess'"),
    ("crisismmd_text_encoder", "builtins:eval", "'builtins:eval' refused"),
])
def test_preflight_refuses_an_unusable_encoder(root, tmp_path, param, value, message):
    make_crisismmd(tmp_path)
    config = load_params(root / "params/paper/06_c2kd.yaml", c2.Config)
    config = c2.Config(**{**config.__dict__, "datasets": ["crisismmd"],
                          "crisismmd_root": str(tmp_path), **dict(STUBS, **{param: value})})
    with pytest.raises(ParamError) as err:
        config.preflight()
    assert err.value.name == param and message in str(err.value)


def test_reproduce_lists_the_encoders_it_will_run_without_importing_them(project, tmp_path,
                                                                        monkeypatch, capsys):
    """Validation (the params, the preflight) finds the encoder module but does not import it;
    the message lists the user code that the jobs will run."""
    marker = tmp_path / "MARKER"
    (tmp_path / "sidefx_repro_enc.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n\n"
        "def f(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sidefx_repro_enc", raising=False)
    data = tmp_path / "CrisisMMD_v2.0"
    make_crisismmd(data)
    _paper_params(project, datasets=["crisismmd"], crisismmd_root=str(data),
                  **dict(STUBS, crisismmd_text_encoder="sidefx_repro_enc:f"))
    validate_all(project, "paper", ["06_c2kd"])
    err = capsys.readouterr().err
    assert "these parameters name code of yours, imported and run by the notebooks' jobs" in err
    assert "params/paper/06_c2kd.yaml: crisismmd_text_encoder = 'sidefx_repro_enc:f'" in err
    assert "params/paper/06_c2kd.yaml: crisismmd_image_encoder = 'stub_encoders:image'" in err
    assert not marker.exists() and "sidefx_repro_enc" not in sys.modules
    # refused or not, validation that fails runs none of it either ("nothing was run")
    _paper_params(project, crisismmd_image_encoder="os:system")
    with pytest.raises(SystemExit, match=r"(?s)nothing was run.*'os:system' refused"):
        validate_all(project, "paper", ["06_c2kd"])
    assert not marker.exists() and "code of yours" not in capsys.readouterr().err


def test_the_paper_profile_without_encoders_refuses_to_start(project, tmp_path):
    make_crisismmd(tmp_path / "CrisisMMD_v2.0")
    _paper_params(project, datasets=["crisismmd"],
                  crisismmd_root=str(tmp_path / "CrisisMMD_v2.0"))
    with pytest.raises(SystemExit) as err:
        reproduce("paper", ["06"], root=project)
    msg = str(err.value)
    # every problem at once: both encoders are unset (the root, a usable folder, is not one)
    assert "params/paper/06_c2kd.yaml: 2 problems:" in msg
    for which in ("text", "image"):
        assert f"parameter 'crisismmd_{which}_encoder': dataset 'crisismmd' is selected but " \
               f"crisismmd_{which}_encoder is empty" in msg
    assert "crisismmd_root" not in msg
    assert "nothing was run" in msg
    assert not (tmp_path / "cache").exists()


def test_a_missing_dataset_stops_the_paper_profile_at_once(project, tmp_path):
    _paper_params(project, cremad_root=str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit) as err:
        reproduce("paper", ["06"], root=project)
    msg = str(err.value)
    # every problem of the profile at once: CREMA-D's folder, and the other datasets' default
    # folders (absent from this project) and CrisisMMD's unset encoders
    assert "params/paper/06_c2kd.yaml: 6 problems:" in msg
    assert "parameter 'cremad_root': dataset 'cremad' is not usable" in msg
    for param in ("ave_root", "vggsound_root", "crisismmd_root", "crisismmd_text_encoder",
                  "crisismmd_image_encoder"):
        assert f"parameter '{param}': " in msg
    assert "Expected layout" in msg and "AudioWAV" in msg and "nothing was run" in msg
    assert not (project / "reports/paper/notebooks").exists()
    assert not (tmp_path / "cache").exists()


def test_an_empty_root_is_named_with_its_layout(root):
    config = load_params(root / "params/paper/06_c2kd.yaml", c2.Config)
    config = c2.Config(**{**config.__dict__, "datasets": ["ave"], "ave_root": ""})
    with pytest.raises(ParamError, match=r"(?s)parameter 'ave_root': dataset 'ave' is selected "
                                         r"but ave_root is empty.*Expected layout"):
        config.preflight()


def test_grid_shares_teachers_and_rows(root):
    config = load_params(root / "params/default/06_c2kd.yaml", c2.Config)
    jobs, tags = c2.grid(config)
    keys = [j.key for j in jobs]
    assert len(keys) == len(set(keys))
    teachers = {j.teacher.key for j in jobs if j.teacher is not None
                and j.teacher.model == "avdigits_cnn"}
    assert len(teachers) == 2 * config.n_seeds, "one unimodal teacher per modality and seed"
    # Table 5's (a) and (d) are Table 3's KD and Ours-full: the same jobs
    t = tags.set_index(["dataset", "section", "direction", "seed", "label"]).job
    d = "mfeat"
    assert t[(d, "table5", "a2v", 0, "(a) KD")] == t[(d, "table3", "a2v", 0, "KD")]
    assert t[(d, "table5", "a2v", 0, "(d) C2KD")] == t[(d, "table3", "a2v", 0, "Ours‡ (full)")]
    assert t[(d, "fig4", "a2v", 0, "krc")].size == len(config.fig4_omegas)
    # each dataset produces its own sections (the costly ones on the cheap data only)
    for dataset in config.datasets:
        assert set(tags[tags.dataset == dataset].section) == config.sections_of(dataset)
    assert config.sections_of("avdigits") == set(config.sections)
    assert config.has("fig4") and "fig4" not in config.sections


def test_stacked_seeds_fold_each_rows_seeds_into_one_job(root):
    config = load_params(root / "params/default/06_c2kd.yaml", c2.Config)
    config = dataclasses.replace(config, stack_seeds=["mfeat"], n_seeds=2, directions=["a2v"],
                                 dataset_sections={"avdigits": ["table5"],
                                                   "mfeat": ["table3", "table7"]})
    jobs, tags = c2.grid(config)
    alone, before = c2.grid(dataclasses.replace(config, stack_seeds=[]))
    seeds = [config.seed + r for r in range(config.n_seeds)]
    for dataset in config.datasets:
        stacked = [j for j in jobs if j.dataset == dataset and j.stacked]
        if dataset not in config.stack_seeds:
            assert not stacked
            continue
        assert stacked
        for job in stacked:
            assert job.run_seeds() == seeds
            assert [r["dataset_options"] for r in job.runs] == [{"order": s} for s in seeds]
            if job.teacher is not None:
                assert job.teacher.runs == job.runs
        # what has no stacked form trains seed by seed: ReviewKD, OGM-GE teachers
        assert {j.method for j in jobs if j.dataset == dataset and not j.stacked} == {
            "review", "nkd"}
        assert {j.teacher.model for j in jobs if j.dataset == dataset and not j.stacked
                and j.method == "nkd"} == {"fusion_ogm_ge"}
    # every tag of seed s points at the run of seed s of its job
    for tag in tags.itertuples():
        job = jobs[tag.job]
        assert (job.run_seeds()[tag.run] if job.stacked else job.seed) == tag.seed
    # the same tags, and per dataset as many runs as before
    cols = ["section", "dataset", "direction", "seed", "label"]
    assert before[cols].equals(tags[cols])
    assert len(alone) > len(jobs)


def test_a_stacked_grid_runs_and_reports_each_seed(root, tmp_path, monkeypatch):
    monkeypatch.setenv("CMKD_CACHE", str(tmp_path / "cache"))
    config = load_params(root / "params/smoke/06_c2kd.yaml", c2.Config)
    config = dataclasses.replace(config, datasets=["mfeat"], sections=["fig4"], n_seeds=2,
                                 fig4_filters=["krc"], stack_seeds=["mfeat"])
    runs = c2.run(config, progress=False)
    assert runs.attrs["jobs"] == 2  # KRC at omega 0 and no selection, each a stack of 2
    assert sorted(runs.seed) == [0, 0, 1, 1] and set(runs.run) == {0, 1}
    from cmkd.jobs import cache as jc

    for row in runs.itertuples():
        stored = jc.read_rows(jc.cache_dir(), row.key)[row.run]
        assert stored["run_seed"] == row.seed
        assert 100 * stored["test_at_best_val"] == pytest.approx(row.acc)
    hist = c2.histories(runs, section="fig4")
    assert set(hist.groupby(["label", "seed"]).epoch.max()) == {1}  # one epoch per run


# ----------------------------------------------------------------------------- rows and presets
ALL_ROWS = (*c2.TABLE3, *c2.TABLE1, *c2.TABLE5, *c2.TABLE6, *c2.TABLE7, c2.FIG4_NONE,
            *(r for rows in c2.FIG5.values() for r in rows))


def test_every_row_names_a_method_or_preset_and_its_published_number():
    for row in ALL_ROWS:
        name, hp = methods.resolve(row.preset)
        methods.get(name).make_hparams(hp)  # the preset's switches are valid
    for preset in c2.FIG4.values():
        name, hp = methods.resolve(preset)
        assert name == "c2kd" and methods.get(name).make_hparams(hp).filter in c2.FILTERS
    assert {f: methods.resolve(p)[1].get("filter", "krc") for f, p in c2.FIG4.items()} == \
        {f: f for f in c2.FIG4}
    assert methods.resolve("c2kd_partial")[1]["teacher_update"] == "top_k"
    # each row of a published table finds its own number (AVE, audio teacher -> visual)
    for table, rows in ((3, c2.TABLE3), (1, c2.TABLE1), (5, c2.TABLE5), (6, c2.TABLE6),
                        (7, c2.TABLE7)):
        found = set()
        for row in rows:
            variant = "student" if table == 7 else row.variant
            entry = paper_entry(table=table, dataset="ave", direction="a2v", method=row.paper,
                                variant=variant)
            if row.label in c2.EXTRA_ROWS:  # our controls and choices: nothing published
                assert entry is None, (table, row.label)
                continue
            assert entry is not None, (table, row.label)
            found.add(entry["id"])
        assert len(found) == len([r for r in rows if r.label not in c2.EXTRA_ROWS]), table
    assert [r.label for r in c2.TABLE1] == ["w/o KD", "Review", "KD", "DML", "SHAKE", "DKD",
                                            "DIST", "NKD", "Ours‡ (full)"]
    assert all(r.variant is None for r in c2.TABLE1)
    assert c2.TABLE7_LABELS == {"fusion_concat": "+Cat", "fusion_film": "+FiLM",
                                "fusion_ogm_ge": "+OGM"}


def test_table5_modules_are_the_printed_switches():
    printed = {r.label: c2.modules(r.preset) for r in c2.TABLE5}
    assert printed == {"(e) w/o KD": "", "(a) KD": "", "(b) BD": "BD", "BD+NT": "NT BD",
                       "BD+NT, target zeroed": "NT BD", "BD+OFS": "OFS BD",
                       "BD+OFS, batch mean": "OFS BD", "(c) OFS+NT+BD": "OFS NT BD",
                       "(d) C2KD": "Proxy OFS NT BD", "(d) C2KD, batch mean": "Proxy OFS NT BD",
                       "(d) λ3 = 0 (control)": "Proxy OFS NT BD"}
    # the switches the paper checks on each row (cmkd/reference/c2kd.yaml)
    labels = (("proxy", "Proxy"), ("ofs", "OFS"), ("nt", "NT"), ("bd", "BD"))
    for row in (r for r in c2.TABLE5 if r.label not in c2.EXTRA_ROWS):
        entry = paper_entry(table=5, dataset="vggsound", direction="v2a", method=row.paper,
                            variant=None)
        assert printed[row.label] == " ".join(t for k, t in labels if entry["switches"][k])
    assert c2.modules("dml") == c2.modules("nkd") == ""
    assert c2.modules("c2kd_partial") == "Proxy OFS NT BD"
    # the modules column of Table 5 as the notebook saves it
    df = _frame([("table5", "ave", "a2v", s, r.label, 50.0) for r in c2.TABLE5 for s in (0, 1)])
    assert c2.table5(df).set_index("method").modules.to_dict() == printed


# ----------------------------------------------------------------------------- planted results
#: the columns of run(): the grid's tags (section, dataset, direction, seed, label and the
#: extras of some sections), the job's scores and its test split's size
RESULT_COLUMNS = ("section", "dataset", "direction", "seed", "label", "switches", "omega", "base",
                  "run", "key", "method", "acc", "acc_last", "teacher_acc", "teacher_end_acc",
                  "seconds", "n_test")


def test_planted_frames_have_the_columns_of_run(root):
    config = load_params(root / "params/default/06_c2kd.yaml", c2.Config)
    _, tags = c2.grid(dataclasses.replace(config, n_seeds=1))
    assert set(tags.columns) - {"job"} | {"key", "method", "acc", "acc_last", "teacher_acc",
                                          "teacher_end_acc", "seconds",
                                          "n_test"} == set(RESULT_COLUMNS)


def test_test_size_is_the_test_split_of_each_job(root, tmp_path):
    config = load_params(root / "params/default/06_c2kd.yaml", c2.Config)
    jobs, _ = c2.grid(dataclasses.replace(config, n_seeds=1, sections=["table5"],
                                          dataset_sections={}))
    sizes = {}
    counted = {(job.dataset, c2.test_size(job, sizes)) for job in jobs}
    assert counted == {("avdigits", 300), ("mfeat", 400)}  # the embedded sets' test splits
    assert len(sizes) == 2, "one count per dataset, folder and options"
    # a real dataset's test split, counted without loading the user's encoders
    make_crisismmd(tmp_path)
    paper = load_params(root / "params/paper/06_c2kd.yaml", c2.Config)
    paper = c2.Config(**{**paper.__dict__, "datasets": ["crisismmd"], "sections": ["table5"],
                         "n_seeds": 1, "crisismmd_root": str(tmp_path),
                         **dict(STUBS, crisismmd_text_encoder="no_such_module_xyz:f")})
    jobs, _ = c2.grid(paper)
    from cmkd import data

    expected = len(data.load("crisismmd", str(tmp_path), "test"))
    assert expected > 0 and c2.test_size(jobs[0]) == expected


def _frame(cells, n_test: int = 300) -> pd.DataFrame:
    """A results frame as run() returns it, from (section, dataset, direction, seed, label, acc
    [, teacher_acc [, teacher_end_acc [, extra fields]]]) tuples, every row scored on a test
    split of ``n_test`` items."""
    rows = []
    for cell in cells:
        section, dataset, direction, seed, label, acc, *rest = cell
        teacher, end, extra = list(rest) + [np.nan, np.nan, {}][len(rest):]
        rows.append(dict({c: np.nan for c in RESULT_COLUMNS}, section=section, dataset=dataset,
                         direction=direction, seed=seed, label=label, run=0, key=f"k{len(rows)}",
                         method=label, acc=acc, acc_last=acc, teacher_acc=teacher,
                         teacher_end_acc=end, seconds=1.0, n_test=n_test, **extra))
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


SEEDS = (0, 1, 2)
NOISE = (-0.3, 0.0, 0.3)  # per seed: the means are the planted values


def _claims_frame(held: bool, teacher_t3: float = 40.0, n_test: int = 100_000) -> pd.DataFrame:
    """Every section on two columns (AVE visual and audio students), the values planted so that
    each claim of claims() is held (``held``) or not: on a test split of ``n_test`` items (by
    default so large that gaps of a point are decided)."""
    t3 = {"w/o KD": 50, "FitNet": 49, "Review": 51, "KD": 48 if held else 51, "DML": 52,
          "SHAKE": 51.5, "RKD": 50.5, "DKD": 52.5, "DIST": 53, "NKD": 53.5,
          "Ours† (top layers)": 54 if held else 45, "Ours‡ (full)": 55 if held else 46}
    t5 = {"(e) w/o KD": 50, "(a) KD": 49, "(b) BD": 50, "BD+NT": 51 if held else 49,
          "BD+OFS": 52, "(c) OFS+NT+BD": 53, "(d) C2KD": 54}
    t6 = {"w/o KD": 50, "DLB": 51, "ZipfKD": 52, "USKD": 51.5, "Ours": 53 if held else 51}
    cells = []
    for direction in ("a2v", "v2a"):
        for s, e in zip(SEEDS, NOISE):
            put = functools.partial(lambda sec, label, acc, *rest, _s=s, _d=direction:
                                    cells.append((sec, "ave", _d, _s, label, acc, *rest)))
            for label, acc in t3.items():
                teacher = np.nan if label == "w/o KD" else teacher_t3 + e
                put("table3", label, acc + e, teacher, teacher)
            for label, acc in t5.items():
                put("table5", label, acc + e)
            for filt, best in (("krc", 55), ("cosine", 54 if held else 56), ("pearson", 53),
                               ("gradcos", 52)):
                for omega, drop in ((-0.2, 1.0), (0.0, 0.0), (0.2, 2.0)):
                    put("fig4", filt, best - drop + e, 40, 40, {"omega": omega})
            put("fig4", "w/o selection", 50 + e, 40, 40, {"omega": np.nan})
            for base in ("DIST", "NKD"):
                for stage, acc in (("plain", 50), ("+BD", 51), ("+BD+OFSD", 52),
                                   ("+BD+OFSD+proxy", 53 if held or base == "DIST" else 49)):
                    put("fig5", stage, acc + e, 40, 40, {"base": base})
            for label, acc in t6.items():
                put("table6", label, acc + e)
            put("table7", "NKD", 52 + e, 60 + e, 60 + e)
            for label in ("+Cat", "+FiLM", "+OGM"):
                put("table7", label, (52 if held else 54) + e, 70 + e, 70 + e)
            put("table7", "Ours", 53 + e, 60 + e, 62 + e)
    return _frame(cells, n_test)


CLAIMS = ("C2KD (either variant) is best or second in every column",
          "KD from the weaker modality hurts the stronger one (KD < w/o KD where the teacher is "
          "less accurate than the student trained alone)",
          "OFS and NT each help over bidirectional distillation (BD)",
          "the KRC filter is at least as good as the cosine, Pearson and gradient-cosine filters "
          "(best threshold of each)",
          "C2KD's modules improve DIST and NKD (DIST inside C2KD: our construction, the target "
          "masked)",
          "C2KD beats the self-KD methods",
          "multimodal teachers are more accurate than the unimodal teacher without giving better "
          "students than C2KD")


@pytest.mark.parametrize("held", [True, False])
def test_claims_on_planted_results(held):
    out = c2.claims(_claims_frame(held))
    assert list(out.columns) == ["artefact", "claim", "evidence", "interval", "verdict"]
    assert list(out.claim) == list(CLAIMS)
    assert list(out.verdict) == ["held" if held else "NOT held"] * len(CLAIMS)
    ev = out.set_index("claim").evidence
    assert ev[CLAIMS[0]].startswith(
        "ave Visual, Ours‡ (full): rank 1 by mean, significantly above 9 and below 0 of 9 "
        "others (held; at the edge, Ours‡ (full) - DIST: +2.00 [" if held else
        "ave Visual, Ours‡ (full): rank 10 by mean, significantly above 0 and below 9 of 9 "
        "others (NOT held; at the edge, Ours‡ (full) - DIST: -7.00 [")
    assert "SHAKE, raw logits" not in ev[CLAIMS[0]]  # not planted: the official form unranked
    assert ev[CLAIMS[1]].startswith("ave Visual: KD - w/o KD: " + ("-2.00 [" if held else
                                                                     "+1.00 ["))
    assert ev[CLAIMS[2]].startswith("ave Visual: BD+NT - BD: " + ("+1.00 [" if held else
                                                                   "-1.00 ["))
    assert "; ave Audio: BD+OFS - BD: +2.00 [" in ev[CLAIMS[2]]
    assert "ave Visual: KRC - cosine: " + ("+1.00 [" if held else "-1.00 [") in ev[CLAIMS[3]]
    assert ev[CLAIMS[3]].endswith("(margin 1 point)")
    assert ("NKD ave Visual: " + ("+3.00 [" if held else "-1.00 [")) in ev[CLAIMS[4]]
    assert ev[CLAIMS[5]].startswith("ave Visual: C2KD - DLB: " + ("+2.00 [" if held else
                                                                   "+0.00 ["))
    assert ev[CLAIMS[6]].startswith("teacher accuracy fused 70.00 vs unimodal 60.00; student: "
                                    f"best fused-teacher NKD {52 if held else 54}.00 vs C2KD "
                                    "53.00; ave Visual: teacher +Cat - unimodal: +10.00 [")
    # the interval column is the deciding part's, with its unit
    assert all(i.endswith(" points") for i in out.interval)


def test_claims_on_a_small_test_split_are_undecided():
    """The same planted gaps (1 to 7.5 points, no spread between seeds) on a 300-item test
    split: the test set's own sampling error (about +-8 points for a difference) decides
    nothing but the 10-point teacher gap of Table 7."""
    for held in (True, False):
        out = c2.claims(_claims_frame(held, n_test=300))
        assert list(out.verdict) == ["undecided"] * len(CLAIMS), held
        parts = out.set_index("claim").evidence[CLAIMS[6]]
        assert "ave Visual: teacher +Cat - unimodal: +10.00 [+2." in parts
    with pytest.raises(ValueError, match="needs the test split's size"):
        c2.claims(_claims_frame(True).drop(columns="n_test"))
    given = c2.claims(_claims_frame(True).drop(columns="n_test"), n_test=100_000)
    pd.testing.assert_frame_equal(given, c2.claims(_claims_frame(True)))


def test_per_seed_tables_keep_every_seed():
    df = _claims_frame(True)
    t3 = c2.per_seed(df, "table3")
    assert list(t3.columns) == ["dataset", "column", "method", "seed 0", "seed 1", "seed 2",
                                "mean", "std"]
    assert list(t3.method[:3]) == ["w/o KD", "FitNet", "Review"]
    row = t3[(t3.column == "Audio") & (t3.method == "KD")].iloc[0]
    assert row[["seed 0", "seed 1", "seed 2"]].tolist() == pytest.approx([47.7, 48.0, 48.3])
    assert row["mean"] == pytest.approx(48.0)
    wide = c2.table3(df).set_index("method")
    assert wide.loc["KD", "ave Audio std"] == pytest.approx(row["std"])
    f4 = c2.per_seed(df, "fig4")
    assert list(f4.columns[:4]) == ["dataset", "column", "method", "omega"]
    f5 = c2.per_seed(df, "fig5")
    assert list(f5.columns[:4]) == ["dataset", "column", "base", "method"]
    t7 = c2.per_seed(df, "table7", value="teacher_acc")
    assert t7.set_index(["column", "method"]).loc[("Visual", "+Cat"), "mean"] == 70.0
    assert c2.per_seed(df, "table6").shape[0] == 2 * 5
    assert c2.per_seed(df[df.section == "table3"], "table5").empty


def test_claims_ask_only_what_the_results_can_answer():
    # a teacher more accurate than the student alone: the weak-to-strong claim is not asked
    out = c2.claims(_claims_frame(True, teacher_t3=60.0))
    assert CLAIMS[1] not in set(out.claim) and len(out) == len(CLAIMS) - 1
    only_t3 = _claims_frame(True)
    only_t3 = only_t3[only_t3.section == "table3"]
    assert list(c2.claims(only_t3).claim) == list(CLAIMS[:2])
    assert c2.claims(_frame([])).empty


def _compare_frame() -> pd.DataFrame:
    """Every published table's rows on AVE (both columns), CrisisMMD (image and text students)
    and the embedded avdigits, three seeds each; acc, teacher_acc and teacher_end_acc planted
    from the row's position, so every cell has its own values."""
    cells = []
    sections = (("table3", c2.TABLE3), ("table5", c2.TABLE5), ("table6", c2.TABLE6),
                ("table7", c2.TABLE7), ("fig4", (c2.FIG4_NONE,)))
    for d, dataset in enumerate(("ave", "crisismmd", "avdigits")):
        for r, direction in enumerate(("a2v", "v2a")):
            for k, (section, rows) in enumerate(sections):
                for i, row in enumerate(rows):
                    for s, e in zip(SEEDS, (-1.0, 0.5, 0.5)):
                        base = 10 * d + 5 * r + k + i / 10
                        cells.append((section, dataset, direction, s, row.label, 40 + base + e,
                                      60 + base + 2 * e, 70 + base + 3 * e))
    return _frame(cells)


def _stats(df, section, dataset, direction, label, column="acc"):
    v = df[(df.section == section) & (df.dataset == dataset) & (df.direction == direction)
           & (df.label == label)][column]
    assert len(v) == len(SEEDS)
    return float(np.mean(v)), float(np.std(v))


def test_compare_puts_each_row_beside_its_published_number():
    df = _compare_frame()
    out = c2.compare(df)
    assert list(out) == ["ours (test at best validation epoch)"]
    got = out["ours (test at best validation epoch)"]

    def check(key, *cell, column="acc"):
        assert key in got, key
        assert got[key] == pytest.approx(_stats(df, *cell, column=column)), key

    check("c2kd_t3_ave_a2v_c2kd_partial", "table3", "ave", "a2v", "Ours† (top layers)")
    check("c2kd_t3_ave_a2v_c2kd_full", "table3", "ave", "a2v", "Ours‡ (full)")
    check("c2kd_t1_ave_v2a_c2kd", "table3", "ave", "v2a", "Ours‡ (full)")  # Table 1: Table 3's
    check("c2kd_t1_ave_a2v_review", "table3", "ave", "a2v", "Review")
    check("c2kd_t3_crisismmd_t2i_c2kd_full", "table3", "crisismmd", "a2v", "Ours‡ (full)")
    check("c2kd_t3_crisismmd_i2t_nokd", "table3", "crisismmd", "v2a", "w/o KD")
    check("c2kd_t5_ave_a2v_c2kd_bd", "table5", "ave", "a2v", "(b) BD")
    check("c2kd_t5_crisismmd_i2t_c2kd_noproxy", "table5", "crisismmd", "v2a", "(c) OFS+NT+BD")
    check("c2kd_t6_ave_v2a_zipfkd", "table6", "ave", "v2a", "ZipfKD")
    check("c2kd_t6_crisismmd_t2i_zipfkd", "table6", "crisismmd", "a2v", "ZipfKD")
    check("c2kd_t7_ave_a2v_nkd_cat_student", "table7", "ave", "a2v", "+Cat")
    check("c2kd_t7_ave_a2v_nkd_cat_teacher", "table7", "ave", "a2v", "+Cat", column="teacher_acc")
    check("c2kd_t7_ave_v2a_nkd_teacher", "table7", "ave", "v2a", "NKD", column="teacher_acc")
    # C2KD's teacher in Table 7 is its teacher after training (it learns too)
    check("c2kd_t7_ave_a2v_c2kd_teacher", "table7", "ave", "a2v", "Ours",
          column="teacher_end_acc")
    # the whole set: the ids of the published values (the reference's naming rule, rebuilt
    # here as an independent check) that our rows have, and nothing else
    expected = set()
    for (section, dataset, direction, label), _ in df.groupby(
            ["section", "dataset", "direction", "label"]):
        ref = c2.reference_direction(dataset, direction)
        for table, rows in c2.PAPER_TABLES.get(section, ()):
            row = next((r for r in rows if r.label == label), None)
            if row is None:
                continue
            for variant in ("student", "teacher") if table == 7 else (row.variant,):
                key = "_".join(["c2kd", f"t{table}", dataset, ref, row.paper]
                               + ([variant] if variant else []))
                if key in paper_values():
                    expected.add(key)
    assert set(got) == expected
    assert not any("avdigits" in k or "fig" in k for k in got)
    assert not any(k.startswith(("c2kd_t1_crisismmd", "c2kd_t7_crisismmd")) for k in got)
    assert {k.split("_")[3] for k in got if "crisismmd" in k} == {"t2i", "i2t"}
    assert len(expected) > 100


def test_compare_gives_nothing_for_the_embedded_data():
    df = _compare_frame()
    assert c2.compare(df[df.dataset == "avdigits"]) == {}
    assert c2.compare(_claims_frame(True).assign(dataset="avdigits")) == {}


@pytest.mark.parametrize("gain", [3.0, -3.0, 0.2])
def test_control_and_documented_choice_claims_on_planted_results(gain):
    """C2KD against its lambda3 = 0 control (Tables 3, 5) and Table 5 under the official
    code's choices: a planted gain of +3 is held, -3 NOT held, +0.2 undecided (large test
    split, seeds within +-0.3)."""
    cells = []
    for direction in ("a2v", "v2a"):
        for s, e in zip(SEEDS, NOISE):
            for label, acc in (("w/o KD", 50), ("KD", 49), ("Ours‡ (full)", 52),
                               ("Ours‡, λ3 = 0 (control)", 52 - gain)):
                cells.append(("table3", "mfeat", direction, s, label, acc + e, 60, 60))
            for label, acc in (("(b) BD", 50), ("BD+NT", 51), ("BD+OFS", 51),
                               ("BD+NT, target zeroed", 50 + gain),
                               ("BD+OFS, batch mean", 50 + gain), ("(d) C2KD", 52),
                               ("(d) λ3 = 0 (control)", 52 - gain)):
                cells.append(("table5", "mfeat", direction, s, label, acc + e))
    df = _frame(cells, n_test=100_000)
    out = c2.claims(df).set_index("artefact")
    want = {3.0: "held", -3.0: "NOT held", 0.2: "undecided"}[gain]
    assert out.loc["control (Table 3)", "verdict"] == want
    assert out.loc["control (Table 5)", "verdict"] == want
    assert out.loc["C2KD Table 5, official code's choices", "verdict"] == want
    assert out.loc["C2KD Table 5", "verdict"] == "held"
    assert "STILL IMPROVING" not in " ".join(out.evidence)
    # runs still improving at their last epoch are named in the claims they feed
    marked = df.assign(still_improving=df.label == "BD+NT")
    ev = c2.claims(marked).set_index("artefact").evidence
    assert "STILL IMPROVING at the last epoch: 6 of " in ev["C2KD Table 5"]
    assert "STILL IMPROVING" not in ev["control (Table 3)"]


def test_per_item_correctness_pairs_the_test_term():
    """With each seed's per-item correctness the test term is paired: two methods that err on
    the same items differ by less noise than the binomial bound allows."""
    rng = np.random.default_rng(0)
    n = 300
    base = rng.random((3, n)) < 0.6
    better = base.copy()
    better[:, :15] = True  # the same items right, plus 15 more: +5 points
    cells, correct = [], {}
    for direction in ("a2v",):
        for s in SEEDS:
            for label, items in (("w/o KD", base[s]), ("KD", better[s]),
                                 ("Ours‡ (full)", base[s])):
                cells.append(("table3", "mfeat", direction, s, label, 100 * items.mean(), 60,
                              60))
                correct[(s, label)] = "".join("1" if x else "0" for x in items)
    df = _frame(cells, n_test=n)
    teacher_weaker = df.assign(teacher_acc=40.0)  # so that the weak-teacher claim is asked
    unpaired = c2.claims(teacher_weaker).set_index("artefact")
    paired = c2.claims(teacher_weaker.assign(
        test_correct=[correct[(s, lbl)] for s, lbl in zip(df.seed, df.label)])
    ).set_index("artefact")
    # KD - w/o KD = +5 with no spread: undecided on the binomial bound, decided when paired
    assert unpaired.loc["C2KD Table 1 / 3", "verdict"] == "undecided"
    assert paired.loc["C2KD Table 1 / 3", "verdict"] == "NOT held"
