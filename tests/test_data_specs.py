"""cmkd.data.specs: how a paired dataset enters a crossmodal grid (modalities and batch keys, the
papers' models, loader options, roots) and the preflight that lists every problem at once."""

from __future__ import annotations

import sys

import pytest

from cmkd import data, models
from cmkd.data import specs
from cmkd.params import ParamError

#: a grid's params as the notebooks give them, nothing selected from disk
PARAMS = {"image_size": 64, "cremad_root": "", "ave_root": "", "vggsound_root": "",
          "crisismmd_root": "", "crisismmd_text_encoder": "", "crisismmd_image_encoder": "",
          "crisismmd_text_dim": 16, "crisismmd_image_dim": 12}


@pytest.mark.parametrize("name", sorted(specs.SPECS))
def test_every_spec_names_registered_models_and_the_loaders_keys(name):
    s = specs.spec(name)
    assert name in data.DATASETS
    assert set(s.keys) == set(s.models) == set(s.modalities)
    for modality, (model, opts) in s.models.items():
        assert model in models.names(), (name, modality)
        assert "classes" not in opts  # added from the dataset
    assert set(s.options) | set(s.params) <= set(data.option_names(name))
    assert set(s.encoders) <= set(s.params) and set(s.dims) <= set(s.modalities)
    assert (specs.root_param(name) is None) == (name in data.EMBEDDED)


def test_directions_and_unknown_datasets():
    assert specs.modalities("cremad", "a2v") == ("audio", "visual")
    assert specs.modalities("cremad", "v2a") == ("visual", "audio")
    assert specs.modalities("crisismmd", "a2v") == ("text", "image")
    with pytest.raises(ValueError, match="dataset 'mvd' has no pairing spec; known: avdigits"):
        specs.spec("mvd")


def test_loader_options_and_models_from_the_params():
    assert specs.loader_options("avdigits", PARAMS) == {}
    assert specs.loader_options("cremad", PARAMS) == {"frames": 1, "image_size": 64}
    assert specs.loader_options("vggsound", dict(PARAMS, image_size=32)) == {
        "frames": 3, "image_size": 32}
    assert specs.model("cremad", "audio", PARAMS) == ("resnet18", {"in_channels": 1,
                                                                   "classes": 6})
    assert specs.model("avdigits", "visual", PARAMS) == ("avdigits_cnn", {"modality": "image",
                                                                          "classes": 10})
    name, opts = specs.model("crisismmd", "image", PARAMS)
    assert name == "mlp" and opts["in_features"] == 12 and opts["classes"] == 8
    assert specs.model("crisismmd", "text", dict(PARAMS, crisismmd_text_dim=5))[1][
        "in_features"] == 5
    # the spec itself is left as it was
    assert "in_features" not in specs.SPECS["crisismmd"].models["image"][1]
    assert "classes" not in specs.SPECS["cremad"].models["audio"][1]


def test_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("CMKD_ROOT", str(tmp_path))
    assert specs.root("avdigits", PARAMS) is None
    assert specs.root("cremad", dict(PARAMS, cremad_root="data/CREMA-D")) == str(
        tmp_path / "data" / "CREMA-D")
    assert specs.root("ave", dict(PARAMS, ave_root="/abs/AVE")) == "/abs/AVE"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert specs.root("ave", dict(PARAMS, ave_root="~/AVE")) == str(tmp_path / "home" / "AVE")


def test_preflight_passes_embedded_data():
    specs.preflight(["avdigits"], PARAMS)
    specs.preflight([], PARAMS)


def test_preflight_names_one_problem_by_its_parameter():
    with pytest.raises(ParamError) as err:
        specs.preflight(["avdigits", "cremad"], PARAMS)
    assert err.value.name == "cremad_root"
    assert "dataset 'cremad' is selected but cremad_root is empty" in str(err.value)
    assert "Expected layout" in str(err.value)


def test_preflight_lists_every_problem_at_once(tmp_path):
    params = dict(PARAMS, ave_root=str(tmp_path / "no_ave"))
    with pytest.raises(ParamError) as err:
        specs.preflight(["cremad", "avdigits", "ave"], params)
    msg = str(err.value)
    assert msg.startswith("2 problems:")
    assert "parameter 'cremad_root': dataset 'cremad' is selected but cremad_root is empty" in msg
    assert "parameter 'ave_root':" in msg and "no_ave" in msg
    assert msg.index("cremad_root") < msg.index("ave_root")  # in the order of the datasets


def test_preflight_checks_crisismmd_encoders_with_its_root(tmp_path):
    params = dict(PARAMS, crisismmd_text_encoder="no_such_module_xyz:encode",
                  crisismmd_image_encoder="")
    with pytest.raises(ParamError) as err:
        specs.preflight(["crisismmd"], params)
    msg = str(err.value)
    assert msg.startswith("3 problems:")
    for words in ("parameter 'crisismmd_text_encoder': crisismmd option 'text_encoder': cannot "
                  "import module 'no_such_module_xyz'",
                  "parameter 'crisismmd_image_encoder': dataset 'crisismmd' is selected but "
                  "crisismmd_image_encoder is empty",
                  "parameter 'crisismmd_root': dataset 'crisismmd' is selected but "
                  "crisismmd_root is empty"):
        assert words in msg, words
    # importable encoders (tests/stub_encoders.py): only the root is left
    params = dict(PARAMS, crisismmd_text_encoder="stub_encoders:text",
                  crisismmd_image_encoder="stub_encoders:image")
    with pytest.raises(ParamError) as err:
        specs.preflight(["crisismmd"], params)
    assert err.value.name == "crisismmd_root"


@pytest.mark.parametrize("path, module", [("os:system", "os"), ("subprocess:run", "subprocess"),
                                          ("builtins:eval", "builtins"),
                                          ("os.path:join", "os"), ("shutil:rmtree", "shutil")])
def test_preflight_refuses_encoders_of_modules_that_run_commands(path, module):
    params = dict(PARAMS, crisismmd_text_encoder=path,
                  crisismmd_image_encoder="stub_encoders:image")
    with pytest.raises(ParamError) as err:
        specs.preflight(["crisismmd"], params)
    msg = str(err.value)
    assert (f"parameter 'crisismmd_text_encoder': crisismmd option 'text_encoder': '{path}' "
            f"refused: its module is '{module}'. An encoder is called on every tweet or image"
            in msg)
    assert "name a function of a module of your own" in msg


def _side_effect_modules(tmp_path, monkeypatch, stem: str):
    """A module and a package (with a submodule) whose import writes a marker file: names
    ``stem``_mod and ``stem``_pkg.enc, each with an encoder ``f``."""
    code = "from pathlib import Path\nPath({marker!r}).write_text('imported')\n"
    (tmp_path / f"{stem}_mod.py").write_text(
        code.format(marker=str(tmp_path / "MOD_MARKER")) + "def f(x):\n    return x\n")
    pkg = tmp_path / f"{stem}_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(code.format(marker=str(tmp_path / "PKG_MARKER")))
    (pkg / "enc.py").write_text("def f(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in (f"{stem}_mod", f"{stem}_pkg", f"{stem}_pkg.enc"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path / "MOD_MARKER", tmp_path / "PKG_MARKER"


def test_preflight_finds_encoder_modules_without_importing_them(tmp_path, monkeypatch):
    mod_marker, pkg_marker = _side_effect_modules(tmp_path, monkeypatch, "sidefx_spec")
    params = dict(PARAMS, crisismmd_text_encoder="sidefx_spec_mod:f",
                  crisismmd_image_encoder="sidefx_spec_pkg.enc:f")
    with pytest.raises(ParamError) as err:      # only the (unset) root is left
        specs.preflight(["crisismmd"], params)
    assert err.value.name == "crisismmd_root"
    assert not mod_marker.exists() and not pkg_marker.exists()
    assert not {"sidefx_spec_mod", "sidefx_spec_pkg"} & set(sys.modules)
    assert specs.user_code(["avdigits", "crisismmd"], params) == [
        ("crisismmd_text_encoder", "sidefx_spec_mod:f"),
        ("crisismmd_image_encoder", "sidefx_spec_pkg.enc:f")]
    # a submodule missing from a package found: refused, the package still not imported
    params["crisismmd_image_encoder"] = "sidefx_spec_pkg.nothing:f"
    with pytest.raises(ParamError, match="cannot import module 'sidefx_spec_pkg.nothing'"):
        specs.preflight(["crisismmd"], params)
    assert not pkg_marker.exists()
