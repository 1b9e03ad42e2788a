"""The project's shape: environment.yml agrees with pyproject, notebooks are paired and clean."""
import json
import re
import tomllib
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml


def test_environment_yml_agrees_with_pyproject(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((root / "environment.yml").read_text())
    deps = env["dependencies"]
    python = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert python == ["python=3.11"]
    minimum = re.match(r">=\s*(\d+)\.(\d+)", project["requires-python"]).groups()
    assert (3, 11) >= tuple(map(int, minimum))
    pip = [d for d in deps if isinstance(d, dict)][0]["pip"]
    assert pip == ["-r requirements.lock"], "environment.yml installs the one lock"
    conda_pkgs = {d.split("=")[0] for d in deps if isinstance(d, str)}
    assert conda_pkgs == {"python", "pip"}, "dependencies belong in pyproject.toml only"
    names = {re.split(r"[<>=!~\[ ]", d)[0].lower() for d in project["dependencies"]}
    required = {"torch", "torchvision", "torchaudio", "jupyterlab", "papermill", "matplotlib",
                "seaborn", "scikit-learn", "pandas", "pyyaml", "tqdm"}
    assert required <= names
    dev = {re.split(r"[<>=!~\[ ]", d)[0].lower() for d in project["optional-dependencies"]["dev"]}
    assert {"pytest", "nbval", "jupytext", "nbstripout", "ruff"} <= dev
    pins = {d.split("==")[0]: d.split("==")[1] for d in project["dependencies"] if "==" in d}
    assert pins == {"torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0"}


def notebooks(root):
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_notebooks_exist(root):
    assert notebooks(root)


NOTEBOOK_STEMS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "notebooks")
                        .glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("name", NOTEBOOK_STEMS)
def test_notebook_and_its_py_pair_agree(root, name):
    ipynb = nbformat.read(root / "notebooks" / f"{name}.ipynb", 4)
    py = jupytext.read(root / "notebooks" / f"{name}.py")
    strip = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert strip(ipynb) == strip(py), "run `make notebooks` after editing the .py"


@pytest.mark.parametrize("name", NOTEBOOK_STEMS)
def test_stored_outputs_are_clean(root, name):
    nb = json.loads((root / "notebooks" / f"{name}.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("outputs") is not None for c in code)
    assert any(c["outputs"] for c in code), "stored outputs are nbval's baseline"
    errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors
    text = json.dumps(nb)
    assert not re.search(r'"/(work|tmp|root|home)/', text), "no absolute paths of this machine"
    assert "image/png" in text, "figures are shown in the notebook"


SHARED_PATHS = re.compile(r"shared/(reference|papers|datasets)")


def test_no_file_cites_the_shared_folder(root):
    """A clone has no shared/ folder: the project cites docs/ and the papers by reference."""
    files = [root / "README.md", *sorted((root / "lib").rglob("*")),
             *sorted((root / "notebooks").glob("*.py")),
             *sorted((root / "notebooks").glob("*.ipynb"))]
    offending = []
    for path in files:
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary data (embedded .npz)
        offending += [f"{path.relative_to(root)}:{number}: {line.strip()}"
                      for number, line in enumerate(text.splitlines(), 1)
                      if SHARED_PATHS.search(line)]
    assert not offending, "files name shared/ paths:\n" + "\n".join(offending)


def test_the_licence_is_declared_and_every_embedded_file_has_one(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["license"].split(" AND ")[0] == "MIT"
    assert all((root / f).is_file() for f in project["license-files"])
    assert "MIT License" in (root / "LICENSE").read_text()
    notice = (root / "NOTICE").read_text()
    embedded = sorted(p for p in (root / "lib/cmkd/data/embedded").iterdir() if p.is_file())
    assert embedded
    for path in embedded:
        assert f"lib/cmkd/data/embedded/{path.name} -- CC BY" in notice, \
            f"NOTICE must say which licence covers {path.name}"
    declared = set(project["license"].split(" AND "))
    for line in notice.splitlines():
        if line.startswith("lib/cmkd/data/embedded/"):
            licence = line.split(" -- ")[1].split(" (")[0]        # 'CC BY 4.0'
            assert licence.replace(" ", "-") in declared, f"pyproject's licence misses {licence}"


def test_citation_cff_names_the_project_and_both_papers(root):
    cff = yaml.safe_load((root / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors"} <= set(cff)
    version = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    assert str(cff["version"]) == version
    titles = {r["title"]: r for r in cff["references"]}
    mfh = titles["The Modality Focusing Hypothesis: Towards Understanding Crossmodal Knowledge "
                 "Distillation"]
    c2kd = titles["C2KD: Bridging the Modality Gap for Cross-Modal Knowledge Distillation"]
    assert [a["family-names"] for a in mfh["authors"]] == ["Xue", "Gao", "Ren", "Zhao"]
    assert [a["family-names"] for a in c2kd["authors"]] == ["Huo", "Xu", "Guo", "Wang", "Guo"]
    assert (mfh["year"], c2kd["year"]) == (2023, 2024)
    readme = (root / "README.md").read_text()
    assert "## Citing" in readme and "@inproceedings{xue2023modality" in readme
    assert "@inproceedings{huo2024c2kd" in readme
