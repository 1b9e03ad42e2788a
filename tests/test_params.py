"""Parameter files: validation messages, and agreement between notebooks and params/."""
import ast
import dataclasses
import json
import shutil
import subprocess
import sys

import pytest
import yaml

from cmkd.experiments import NOTEBOOKS, module_for
from cmkd.params import RESERVED, ParamError, describe, fields, from_mapping, load_params, spec
from cmkd.reproduce import reproduce

PROFILES = ("smoke", "default", "paper")


def parameters_cell(root, notebook):
    """(name -> value, name -> has type annotation and comment) of a notebook's parameters cell."""
    nb = json.loads((root / "notebooks" / f"{notebook}.ipynb").read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{notebook} needs exactly one cell tagged 'parameters'"
    source = "".join(cells[0]["source"])
    values, documented = {}, {}
    for node in ast.parse(source).body:
        assert isinstance(node, ast.AnnAssign), f"{notebook}: write 'name: type = value  # meaning'"
        name = node.target.id
        values[name] = ast.literal_eval(node.value)
        line = source.splitlines()[node.lineno - 1]
        documented[name] = "#" in line
    return values, documented


def required(config_cls) -> set[str]:
    """The parameters of a Config without a default (the optional ones, such as notebook 06's
    method_modules, may be left out of the parameters cell and the params files)."""
    return {n for n, f in fields(config_cls).items() if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING}


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS))
def test_parameters_cell_mirrors_smoke_params_and_config(root, notebook):
    values, documented = parameters_cell(root, notebook)
    assert all(documented.values()), f"undocumented parameters: {documented}"
    config = module_for(notebook).Config
    assert required(config) | set(RESERVED) <= set(values) <= set(fields(config)) | set(RESERVED)
    smoke = yaml.safe_load((root / "params" / "smoke" / f"{notebook}.yaml").read_text())
    assert values["profile"] == "smoke"
    assert {k: v for k, v in values.items() if k not in RESERVED} == smoke


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS))
def test_papermill_reads_every_parameter(root, notebook):
    import papermill

    found = papermill.inspect_notebook(str(root / "notebooks" / f"{notebook}.ipynb"))
    config = module_for(notebook).Config
    assert required(config) | set(RESERVED) <= set(found) <= set(fields(config)) | set(RESERVED)
    assert all(p["help"] for p in found.values()), "each parameter needs a '# meaning' comment"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_params_file_is_valid_and_names_a_notebook(root, profile):
    files = sorted((root / "params" / profile).glob("*.yaml"))
    assert files
    notebooks = {p.stem for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert {f.stem for f in files} == notebooks, "each notebook needs one params file per profile"
    for f in files:
        load_params(f, module_for(f.stem).Config)


@pytest.fixture
def good(root):
    return yaml.safe_load((root / "params/smoke/01_mvd_synthetic_sweeps.yaml").read_text())


Config = module_for("01_mvd_synthetic_sweeps").Config


@pytest.mark.parametrize("change, pattern", [
    ({"n_run": 3}, r"parameter 'n_run': unknown parameter \(did you mean 'n_runs'\?\)"),
    ({"epochs": "many"}, r"parameter 'epochs': expected int, got 'many'"),
    ({"epochs": 2.5}, r"parameter 'epochs': expected int"),
    ({"n_runs": True}, r"parameter 'n_runs': expected int, got True"),
    ({"n_runs": 0}, r"parameter 'n_runs': 0 is out of range; allowed: \[1, 1000\]"),
    ({"gammas": [0.0, 1.5]}, r"parameter 'gammas': 1.5 is out of range; allowed: \[0, 1\]"),
    ({"gammas": [0.3]}, r"parameter 'gammas': gamma = 0.3 is not reachable.*0.25, 0.33"),
    ({"alphas": [1.0]}, r"parameter 'alphas': 1.0 is out of range; allowed: \[0, 1\)"),
    ({"alphas": []}, r"parameter 'alphas': needs at least 1 item"),
    ({"kl_reduction": "sum"}, r"parameter 'kl_reduction': 'sum' is not allowed; choose one of "
                              r"'batchmean', 'mean'"),
    ({"lr": 0}, r"parameter 'lr': 0.0 is out of range; allowed: \(0, 10\]"),
    ({"device": "gpu"}, r"parameter 'device': 'gpu' is not allowed"),
])
def test_bad_values_are_named(tmp_path, good, change, pattern):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(dict(good, **change)))
    with pytest.raises(ParamError, match=pattern) as err:
        load_params(path, Config)
    assert str(err.value).startswith(str(path))


def test_missing_malformed_and_absent_files(tmp_path, good):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in good.items() if k != "seed"}))
    with pytest.raises(ParamError, match="missing parameter.*seed"):
        load_params(path, Config)
    path.write_text("seed: [1,\n")
    with pytest.raises(ParamError, match="not valid YAML"):
        load_params(path, Config)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ParamError, match="must be a mapping"):
        load_params(path, Config)
    with pytest.raises(ParamError, match="params file not found"):
        load_params(tmp_path / "nope.yaml", Config)


def test_ints_are_accepted_for_floats(good):
    cfg = from_mapping(Config, dict(good, lr=1, gammas=[0, 1]))
    assert isinstance(cfg.lr, float) and cfg.gammas == [0.0, 1.0]


def _project_copy(root, tmp_path):
    dst = tmp_path / "project"
    for sub in ("notebooks", "params"):
        shutil.copytree(root / sub, dst / sub)
    return dst


def test_reproduce_refuses_bad_params_before_running_anything(root, tmp_path):
    proj = _project_copy(root, tmp_path)
    bad = proj / "params/default/01_mvd_synthetic_sweeps.yaml"
    bad.write_text(bad.read_text().replace("gammas: [0.0,", "gammas: [-0.5,"))
    with pytest.raises(SystemExit) as err:
        reproduce("default", None, False, root=proj)
    msg = str(err.value)
    assert "params/default/01_mvd_synthetic_sweeps.yaml: parameter 'gammas': -0.5 is out of " \
           "range" in msg and "nothing was run" in msg
    assert not (proj / "reports").exists()


def test_reproduce_refuses_a_notebook_without_a_config(root, tmp_path):
    proj = _project_copy(root, tmp_path)
    shutil.copy(proj / "notebooks/01_mvd_synthetic_sweeps.ipynb", proj / "notebooks/09_new.ipynb")
    with pytest.raises(SystemExit, match="09_new has no experiment module registered"):
        reproduce("smoke", ["09"], root=proj)
    assert not (proj / "reports").exists()


def test_cli_exit_code_and_message(root, tmp_path):
    proj = _project_copy(root, tmp_path)
    bad = proj / "params/smoke/01_mvd_synthetic_sweeps.yaml"
    bad.write_text(bad.read_text() + "learning_rate: 0.1\n")
    res = subprocess.run([sys.executable, "-m", "cmkd.cli", "reproduce", "--profile", "smoke"],
                         cwd=proj, capture_output=True, text=True)
    assert res.returncode != 0
    assert "parameter 'learning_rate': unknown parameter" in res.stderr
    res = subprocess.run([sys.executable, "-m", "cmkd.cli", "reproduce", "--only", "99"],
                         cwd=proj, capture_output=True, text=True)
    assert res.returncode != 0 and "no notebook matches --only '99'" in res.stderr


@pytest.mark.parametrize("text, pattern", [
    ("lr: .nan", r"parameter 'lr': nan is not a finite number"),
    ("lr: .inf", r"parameter 'lr': inf is not a finite number"),
    ("gammas: [0.0, .nan]", r"parameter 'gammas': nan is not a finite number"),
])
def test_non_finite_floats_are_refused(tmp_path, good, text, pattern):
    path = tmp_path / "p.yaml"
    body = yaml.safe_dump({k: v for k, v in good.items() if k != text.split(":")[0]})
    path.write_text(body + text + "\n")
    with pytest.raises(ParamError, match=pattern):
        load_params(path, Config)


def test_a_key_given_twice_is_refused(tmp_path, good):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(good) + "epochs: 7\n")
    with pytest.raises(ParamError, match=r"p.yaml: parameter 'epochs': given twice \(lines \d+ "
                                         r"and \d+\); keep one"):
        load_params(path, Config)


def test_an_unavailable_device_is_refused_at_validation(tmp_path, good):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(dict(good, device="cuda")))
    with pytest.raises(ParamError, match=r"parameter 'device': device 'cuda' was requested but "
                                         r"CUDA is not available"):
        load_params(path, Config)


def test_stray_params_files_are_warned_about(root, tmp_path, monkeypatch, capsys):
    import cmkd.reproduce as rep

    proj = _project_copy(root, tmp_path)
    (proj / "params/smoke/01_mvd_synthetic_sweep.yaml").write_text("seed: 1\n")
    assert rep.stray_params(proj, "smoke", rep.discover(proj)) == [
        "params/smoke/01_mvd_synthetic_sweep.yaml"]
    monkeypatch.setattr(rep, "_reproduce", lambda *a, **k: 0)
    assert rep.reproduce("smoke", ["01"], root=proj) == 0
    err = capsys.readouterr().err
    assert "warning: params/smoke/01_mvd_synthetic_sweep.yaml matches no notebook" in err


# ----------------------------------------------------------------------------- dict parameters
def _no_negative(value):
    bad = sorted(k for k, v in value.items() if isinstance(v, (int, float)) and v < 0)
    if bad:
        raise ValueError(f"negative value(s) for {', '.join(bad)}")


@dataclasses.dataclass(frozen=True)
class WithDict:
    options: dict = dataclasses.field(metadata=spec("named settings", validate=_no_negative))


@pytest.mark.parametrize("value, pattern", [
    ([1, 2], r"parameter 'options': expected a mapping, got \[1, 2\]"),
    ("a: 1", r"parameter 'options': expected a mapping, got 'a: 1'"),
    ({"a": {"b": float("nan")}}, r"parameter 'options.a.b': nan is not a finite number"),
    ({"a": [1.0, float("inf")]}, r"parameter 'options.a': inf is not a finite number"),
    ({1: 2}, r"parameter 'options': keys must be names \(strings\), got 1"),
    ({"a": {"b": object()}}, r"parameter 'options.a.b': expected plain data"),
    ({"x": 1, "y": -2}, r"parameter 'options': negative value\(s\) for y"),
])
def test_dict_parameters_are_plain_data_checked_by_their_validator(value, pattern):
    with pytest.raises(ParamError, match=pattern):
        from_mapping(WithDict, {"options": value}, source="test")


def test_dict_parameters_are_converted_to_plain_data():
    given = {"a": {"b": (1, 2.5)}, "c": None, "d": True}
    cfg = from_mapping(WithDict, {"options": given})
    assert cfg.options == {"a": {"b": [1, 2.5]}, "c": None, "d": True}
    assert cfg.options["a"] is not given["a"]
    assert "options: mapping - named settings" in describe(WithDict)


@pytest.mark.parametrize("notebook", ["06_c2kd", "08_gamma_meets_c2kd"])
@pytest.mark.parametrize("value, words", [
    ("{kd: {temprature: 2}}", ["parameter 'method_hparams'", "method 'kd'", "'temprature'"]),
    ("{c2kd: {omega: .nan}}", ["parameter 'method_hparams.c2kd.omega'", "not a finite number"]),
    ("{kdd: {}}", ["parameter 'method_hparams'", "unknown method 'kdd'"]),
    ("[kd]", ["parameter 'method_hparams': expected a mapping"]),
])
def test_method_hparams_of_the_notebooks_are_checked(root, tmp_path, notebook, value, words):
    good = yaml.safe_load((root / "params" / "smoke" / f"{notebook}.yaml").read_text())
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in good.items() if k != "method_hparams"})
                    + f"method_hparams: {value}\n")
    with pytest.raises(ParamError) as err:
        load_params(path, module_for(notebook).Config)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


# ----------------------------------------------------------------------------- input checks
def _smoke(root, notebook):
    return yaml.safe_load((root / "params" / "smoke" / f"{notebook}.yaml").read_text())


@pytest.mark.parametrize("notebook, name, value, shown", [
    ("06_c2kd", "datasets", ["avdigits", "avdigits"], "'avdigits'"),
    ("06_c2kd", "fig4_omegas", [0.0, 0.2, 0], "0.0"),
    ("01_mvd_synthetic_sweeps", "gammas", [0.0, 1.0, 0.0], "0.0"),
    ("08_gamma_meets_c2kd", "methods", ["nokd", "kd", "kd"], "'kd'"),
    ("02_modality_general_teacher", "xs2", [1, 5, 5], "5"),
])
def test_duplicate_list_items_are_refused(root, tmp_path, notebook, name, value, shown):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(dict(_smoke(root, notebook), **{name: value})))
    with pytest.raises(ParamError) as err:
        load_params(path, module_for(notebook).Config)
    assert str(err.value) == f"{path}: parameter '{name}': {shown} is listed twice; list each " \
                             f"item once"


def test_every_list_parameter_of_the_notebooks_refuses_duplicates():
    import typing

    for notebook in NOTEBOOKS:
        config = module_for(notebook).Config
        hints = typing.get_type_hints(config)
        lists = [n for n, f in fields(config).items() if typing.get_origin(hints[n]) is list]
        assert lists, notebook
        for name in lists:
            if (notebook, name) in MAY_REPEAT:
                assert not fields(config)[name].metadata["unique"], (notebook, name)
                continue
            assert fields(config)[name].metadata["unique"], (notebook, name)


#: list parameters whose items may repeat by meaning (not a run counted twice): layer widths
MAY_REPEAT = {("04_case_studies", "t7_hidden")}


@dataclasses.dataclass(frozen=True)
class WithLists:
    names: list[str] = dataclasses.field(metadata=spec("distinct names"))
    pairs: list[str] = dataclasses.field(metadata=spec("may repeat", unique=False))


def test_a_list_may_opt_out_of_unique_items():
    cfg = from_mapping(WithLists, {"names": ["a", "b"], "pairs": ["x", "x"]})
    assert cfg.pairs == ["x", "x"]
    with pytest.raises(ParamError, match="parameter 'names': 'a' is listed twice"):
        from_mapping(WithLists, {"names": ["a", "b", "a"], "pairs": []})


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS))
def test_seeds_must_fit_in_63_bits(root, tmp_path, notebook):
    good = _smoke(root, notebook)
    assert from_mapping(module_for(notebook).Config, dict(good, seed=2**63 - 1)).seed == 2**63 - 1
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(good).replace(f"seed: {good['seed']}\n",
                                                 "seed: 1000000000000000000000000\n"))
    with pytest.raises(ParamError) as err:
        load_params(path, module_for(notebook).Config)
    assert str(err.value) == (f"{path}: parameter 'seed': 1000000000000000000000000 is out of "
                              f"range; a seed lies in [0, 2**63 - 1]")


@dataclasses.dataclass(frozen=True)
class WithSeeds:
    seeds: list[int] = dataclasses.field(metadata=spec("one run per seed"))
    split_seed: int = dataclasses.field(metadata=spec("the split's seed"))
    base: int = dataclasses.field(metadata=spec("a seed by another name", seed=True))


@pytest.mark.parametrize("change, name", [
    ({"seeds": [0, 2**63]}, "seeds"), ({"seeds": [-1]}, "seeds"),
    ({"split_seed": 2**64}, "split_seed"), ({"base": -3}, "base"),
])
def test_every_seed_parameter_is_checked(change, name):
    good = {"seeds": [0, 2**63 - 1], "split_seed": 0, "base": 7}
    assert from_mapping(WithSeeds, good).seeds == [0, 2**63 - 1]
    with pytest.raises(ParamError, match=rf"parameter '{name}': .* a seed lies in \[0, 2\*\*63"):
        from_mapping(WithSeeds, dict(good, **change))


def test_a_params_file_that_is_not_utf8_is_named_with_its_line(root, tmp_path, good):
    path = tmp_path / "p.yaml"
    text = yaml.safe_dump(good).encode()
    path.write_bytes(b"# r\xe9sum\xe9 of the settings\n" + text)
    with pytest.raises(ParamError) as err:
        load_params(path, Config)
    assert str(err.value).startswith(f"{path}: line 1, column 4: byte 0xe9 is not UTF-8 text")
    path.write_bytes(text + b"# caf\xe9\n")
    last = len(text.splitlines()) + 1
    with pytest.raises(ParamError, match=rf"line {last}, column 6: byte 0xe9"):
        load_params(path, Config)
    path.write_bytes("# résumé, UTF-8\n".encode() + text)
    assert load_params(path, Config).seed == good["seed"]


def test_reproduce_names_a_params_file_that_is_not_utf8(root, tmp_path):
    proj = _project_copy(root, tmp_path)
    bad = proj / "params/smoke/01_mvd_synthetic_sweeps.yaml"
    bad.write_bytes(bad.read_bytes() + b"# na\xefve\n")
    with pytest.raises(SystemExit) as err:
        reproduce("smoke", ["01"], root=proj)
    assert "params/smoke/01_mvd_synthetic_sweeps.yaml: line " in str(err.value)
    assert "byte 0xef is not UTF-8 text" in str(err.value)


@pytest.mark.parametrize("change, name", [
    ({"kl_reduction": "z" * 1_000_000}, "kl_reduction"),
    ({"epochs": "9" * 100_000 + "x"}, "epochs"),
    ({"gammas": [0.0, "w" * 100_000]}, "gammas"),
    ({"q" * 100_000: 1}, "q" * 200),
])
def test_quoted_bad_values_are_capped(tmp_path, good, change, name):
    with pytest.raises(ParamError) as err:
        from_mapping(Config, dict(good, **change), source="p.yaml")
    message = str(err.value)
    assert f"parameter '{name}" in message and "..." in message
    assert len(message) < 1000, message[:300]


@dataclasses.dataclass(frozen=True)
class WithFloor:
    lr: float = dataclasses.field(metadata=spec("rate", low=0, low_open=True))
    lr_min: float = dataclasses.field(metadata=spec("floor", low=0, at_most="lr"))


def test_a_parameter_may_be_bounded_by_another():
    assert from_mapping(WithFloor, {"lr": 0.1, "lr_min": 0.1}).lr_min == 0.1
    with pytest.raises(ParamError) as err:
        from_mapping(WithFloor, {"lr": 0.01, "lr_min": 0.1}, source="p.yaml")
    assert str(err.value) == "p.yaml: parameter 'lr_min': 0.1 must not exceed lr (0.01)"
    assert from_mapping(WithFloor, {"lr_min": 5.0}, partial=True) == {"lr_min": 5.0}
    assert "lr_min: float - floor (range [0, None]; at most lr)" in describe(WithFloor)


def test_notebook_06_refuses_a_floor_above_the_rate(root):
    good = _smoke(root, "06_c2kd")
    with pytest.raises(ParamError, match="parameter 'lr_min': 0.1 must not exceed lr"):
        from_mapping(module_for("06_c2kd").Config, dict(good, lr=0.01, lr_min=0.1))


PAPER_06_PROBLEMS = ("cremad_root", "ave_root", "vggsound_root", "crisismmd_root",
                     "crisismmd_text_encoder", "crisismmd_image_encoder")


@pytest.mark.parametrize("roots", ["as shipped", "unset"])
def test_paper_preflight_lists_every_problem_and_what_can_run_meanwhile(root, tmp_path, roots):
    proj = _project_copy(root, tmp_path)
    if roots == "unset":
        path = proj / "params/paper/06_c2kd.yaml"
        values = yaml.safe_load(path.read_text())
        values.update({p: "" for p in PAPER_06_PROBLEMS[:4]})
        path.write_text(yaml.safe_dump(values))
    with pytest.raises(SystemExit) as err:
        reproduce("paper", ["06"], root=proj)
    msg = str(err.value)
    assert "params/paper/06_c2kd.yaml: 6 problems:" in msg
    assert all(f"parameter '{p}'" in msg for p in PAPER_06_PROBLEMS)
    assert msg.endswith("These notebooks read no dataset and can run meanwhile: "
                        "01_mvd_synthetic_sweeps, 02_modality_general_teacher, 03_theorem_4_1, "
                        "08_gamma_meets_c2kd, 09_diagnostic_validation:\n"
                        "  cmkd reproduce --profile paper --only 01 02 03 08 09")
    assert not (proj / "reports").exists()


def test_no_hint_when_nothing_is_missing_but_a_value_is_bad(root, tmp_path):
    proj = _project_copy(root, tmp_path)
    bad = proj / "params/paper/01_mvd_synthetic_sweeps.yaml"
    bad.write_text(bad.read_text() + "epoch: 3\n")
    with pytest.raises(SystemExit) as err:
        reproduce("paper", ["01"], root=proj)
    assert "unknown parameter" in str(err.value) and "can run meanwhile" not in str(err.value)
