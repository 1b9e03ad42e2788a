"""requirements.lock: every package pinned with hashes, within pyproject's ranges, installed as
locked, and the one lock that the Makefile and environment.yml install."""
import re
import tomllib
from importlib import metadata

import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

TRIO = {"torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0"}


def read_lock(path):
    """name -> (version, marker or None, hashes) from a `uv pip compile --generate-hashes` file,
    keeping for each name the entry whose marker holds here (a universal lock may pin a package
    twice, under disjoint markers: different versions for different Python patch releases)."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())  # join continuation lines
    out = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)\s*(?:;\s*(.*?))?\s*((?:--hash=\S+\s*)*)$", line)
        assert m, f"requirements.lock: cannot read line {line[:80]!r}"
        name, version, marker, hashes = m.groups()
        name = canonicalize_name(name)
        entry = (version, marker, re.findall(r"--hash=(sha256:[0-9a-f]{64})", hashes))
        here = not marker or Marker(marker).evaluate()
        if name in out:
            other_here = not out[name][1] or Marker(out[name][1]).evaluate()
            assert not (here and other_here), f"requirements.lock pins {name} twice for here"
            if not here:
                continue
        out[name] = entry
    return out


@pytest.fixture(scope="module")
def lock(root):
    return read_lock(root / "requirements.lock")


@pytest.fixture(scope="module")
def project(root):
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]


def test_every_package_is_pinned_with_hashes(lock):
    assert len(lock) > 50, "the lock must pin the transitive dependencies too"
    unhashed = [name for name, (_, _, hashes) in lock.items() if not hashes]
    assert not unhashed, f"packages without hashes: {unhashed}"


def test_the_lock_satisfies_pyproject(lock, project):
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    for text in wanted:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} (pyproject) is not in requirements.lock: run make lock"
        version = lock[name][0]
        assert req.specifier.contains(Version(version), prereleases=True), (
            f"requirements.lock has {name}=={version}, outside pyproject's {req.specifier}; "
            "run make lock")


def test_the_torch_trio_is_exact_and_loads_together(lock, project):
    for name, version in TRIO.items():
        assert lock[name][0] == version
        assert f"{name}=={version}" in project["dependencies"]
    import torch
    import torchaudio
    import torchvision

    assert torch.__version__.split("+")[0] == TRIO["torch"]
    assert torchvision.__version__.split("+")[0] == TRIO["torchvision"]
    assert torchaudio.__version__.split("+")[0] == TRIO["torchaudio"]


def test_this_environment_is_the_lock(lock):
    """Every locked package that applies here is installed at the locked version."""
    wrong = []
    for name, (version, marker, _) in lock.items():
        if marker and not Marker(marker).evaluate():
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}: not installed (locked {version})")
            continue
        if Version(installed.split("+")[0]) != Version(version.split("+")[0]):
            wrong.append(f"{name}: installed {installed}, locked {version}")
    assert not wrong, "the environment differs from requirements.lock:\n" + "\n".join(wrong)


def test_makefile_and_environment_yml_install_the_same_lock(root):
    makefile = (root / "Makefile").read_text()
    assert "LOCK := requirements.lock" in makefile
    assert "uv pip sync" in makefile and "--require-hashes $(LOCK)" in makefile
    env = yaml.safe_load((root / "environment.yml").read_text())
    pip = [d for d in env["dependencies"] if isinstance(d, dict)][0]["pip"]
    assert pip == ["-r requirements.lock"]
    header = (root / "requirements.lock").read_text().splitlines()[1]
    recipe = re.search(r"^lock:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    recipe = " ".join(recipe.replace("\\\n", " ").split())
    for flag in re.findall(r"--\S+(?: \d\S*)?", header.split("-o")[0]):
        assert flag in recipe, f"make lock does not pass {flag} as the lock's header says"
