"""Methods from outside the package: a user module named by a params file (``method_modules``)
or an entry point registers methods that notebooks 06 and 08 run, with hyperparameters from the
params file (``method_hparams``), validated without importing the module; worker processes
import it too.  And the new user's path end to end: own .npz -> a job grid with a method of a
user module and a hyperparameter from a params file -> a table."""
import importlib.metadata
import json
import sys
import uuid

import numpy as np
import pytest
import yaml

from cmkd import methods
from cmkd.experiments import c2kd_benchmark as c2
from cmkd.experiments import gamma_c2kd
from cmkd.params import ParamError, load_params

#: a method of the user's: KD with the Jensen-Shannon divergence (bounded, symmetric) in place
#: of the KL, ``ce + weight * T^2 JS(p_s^T, p_t^T)``; NAME and its module name are made unique
#: per test (the registry is the process's)
METHOD = '''
from dataclasses import dataclass, field

import torch.nn.functional as F

from cmkd.methods import Method, register
from cmkd.params import spec


@register
class JSKD(Method):
    name = "NAME"

    @dataclass(frozen=True)
    class Hparams:
        temperature: float = field(default=1.0, metadata=spec("T", low=0, low_open=True))
        weight: float = field(default=1.0, metadata=spec("weight of the JS term", low=0))

    def step(self, batch, epoch):
        s, t = self.student_forward(batch), self.teacher_forward(batch)
        T = self.hp.temperature
        ps, pt = F.softmax(s / T, -1), F.softmax(t / T, -1)
        log_m = ((ps + pt) / 2).log()
        js = (F.kl_div(log_m, ps, reduction="batchmean")
              + F.kl_div(log_m, pt, reduction="batchmean")) / 2
        ce = self.supervised_loss(s, batch["label"])
        return {"total": ce + self.hp.weight * T * T * js, "ce": ce.detach(), "js": js.detach()}
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """(module name, method name) of a fresh user module in tmp_path, on sys.path, not
    imported."""
    tag = uuid.uuid4().hex[:8]
    module, name = f"my_methods_{tag}", f"jskd_{tag}"
    (tmp_path / f"{module}.py").write_text(METHOD.replace("NAME", name))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield module, name
    methods.REGISTRY.pop(name, None)
    sys.modules.pop(module, None)


def pairs_file(path, n=240, classes=3, seed=0):
    """A small .npz in the `pairs` format: a is the clearer modality, b the noisier one."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    a = rng.normal(size=(n, 6)) + 2.0 * rng.normal(size=(classes, 6))[y]
    b = rng.normal(size=(n, 4)) + 0.8 * rng.normal(size=(classes, 4))[y]
    np.savez(path, a=a, b=b, y=y)
    return path


def params_file(root, tmp_path, notebook, **changes):
    """The smoke params of ``notebook`` with ``changes``, written to a file of tmp_path."""
    values = yaml.safe_load((root / "params" / "smoke" / f"{notebook}.yaml").read_text())
    values.update(changes)
    path = tmp_path / f"{notebook}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


# ----------------------------------------------------------------------------- the new user
def test_own_npz_to_a_table_with_a_user_method_and_its_hparam(root, tmp_path, user_module):
    module, name = user_module
    npz = pairs_file(tmp_path / "my_pairs.npz")
    path = params_file(root, tmp_path, "06_c2kd", datasets=["pairs"], pairs_root=str(npz),
                       sections=["table3"], epochs=2, teacher_epochs=2, batch_size=32,
                       device="cpu", method_modules=[module], extra_methods=[name],
                       method_hparams={"c2kd": {"omega": 0.0}, name: {"temperature": 4.0}})
    config = load_params(path, c2.Config)
    config.preflight()
    assert module not in sys.modules and name not in methods.REGISTRY  # validation ran nothing
    assert ("method_modules", module) in config.user_code()

    runs = c2.run(config, cache=tmp_path / "cache", progress=False)
    assert module in sys.modules and name in methods.REGISTRY
    table = c2.table3(runs)
    assert table.method.iloc[-1] == name                    # the user's row, after the paper's
    assert {"w/o KD", "KD", "Ours‡ (full)"} <= set(table.method)
    (mean,) = [c for c in table.columns if c.endswith(" mean")]   # one column: pairs, a -> b
    assert 0 <= table.set_index("method").loc[name, mean] <= 100
    # the hyperparameter from the params file is the one the job ran with (its stored config)
    key = runs[runs.label == name].key.iloc[0]
    job = json.loads((tmp_path / "cache" / key / "job.json").read_text())
    assert job["method"] == name
    assert job["hparams"] == {"temperature": 4.0, "weight": 1.0}
    # the user's row is beside the paper's claims, not in them
    claims = c2.claims(runs)
    assert not claims.evidence.str.contains(name).any()


# ----------------------------------------------------------------------------- validation
def test_method_hparams_are_validated_with_file_and_key(root, tmp_path, user_module):
    module, name = user_module
    path = params_file(root, tmp_path, "06_c2kd", method_hparams={"kd": {"temprature": 4}})
    with pytest.raises(ParamError, match=rf"{path}.*'method_hparams'.*temprature"):
        load_params(path, c2.Config)
    path = params_file(root, tmp_path, "06_c2kd", method_hparams={"kdd": {"temperature": 4}})
    with pytest.raises(ParamError, match=rf"{path}.*'method_hparams'.*unknown method 'kdd'.*"
                                         r"did you mean 'kd'.*method_modules"):
        load_params(path, c2.Config)
    path = params_file(root, tmp_path, "06_c2kd", extra_methods=[name])
    with pytest.raises(ParamError, match=rf"{path}.*'extra_methods'.*unknown method"):
        load_params(path, c2.Config)
    path = params_file(root, tmp_path, "06_c2kd", extra_methods=["kd"])
    with pytest.raises(ParamError, match=rf"{path}.*'extra_methods'.*already a row"):
        load_params(path, c2.Config)
    # a user method's hyperparameters are checked once its module is imported (by the grid)
    path = params_file(root, tmp_path, "06_c2kd", method_modules=[module], extra_methods=[name],
                       method_hparams={name: {"temprature": 4}})
    config = load_params(path, c2.Config)
    assert module not in sys.modules
    with pytest.raises(ParamError, match=rf"'method_hparams'.*temprature.*after importing "
                                         rf"method_modules {module}"):
        c2.grid(config)


@pytest.mark.parametrize("module, pattern", [
    ("os", "refused: its module is 'os'"),
    ("subprocess.sub", "refused: its module is 'subprocess'"),
    ("builtins", "refused"),
    ("my-methods", "not a module import path"),
])
def test_method_modules_that_would_run_commands_are_refused(root, tmp_path, module, pattern):
    path = params_file(root, tmp_path, "08_gamma_meets_c2kd", method_modules=[module])
    with pytest.raises(ParamError, match=rf"{path}.*'method_modules'.*{pattern}"):
        load_params(path, gamma_c2kd.Config)


def test_a_module_that_is_not_found_fails_the_preflight_not_validation(root, tmp_path):
    path = params_file(root, tmp_path, "08_gamma_meets_c2kd", method_modules=["no_such_mod_x"],
                       methods=["nokd", "kd", "mine"])
    config = load_params(path, gamma_c2kd.Config)          # another machine's module may do
    with pytest.raises(ParamError, match="'method_modules'.*cannot find module 'no_such_mod_x'"):
        config.preflight()
    with pytest.raises(ParamError, match="'method_modules'.*cannot import module"):
        gamma_c2kd.run(config)


def test_notebook_08_accepts_a_user_method_with_its_hparams(root, tmp_path, user_module):
    module, name = user_module
    path = params_file(root, tmp_path, "08_gamma_meets_c2kd", method_modules=[module],
                       methods=["nokd", "kd", name], method_hparams={name: {"weight": 0.5}})
    config = load_params(path, gamma_c2kd.Config)
    assert module not in sys.modules
    methods.activate(config.method_modules, config.method_hparams, config.methods)
    job = gamma_c2kd.student_job(config, name)
    assert job.method == name and job.hparams == {"temperature": 1.0, "weight": 0.5}
    assert job.teacher is not None
    with pytest.raises(ParamError, match=r"'methods'.*'nope' is not allowed.*method_modules"):
        load_params(params_file(root, tmp_path, "08_gamma_meets_c2kd",
                                methods=["nokd", "kd", "nope"]), gamma_c2kd.Config)


def test_an_entry_point_names_a_method_before_its_module_is_imported(tmp_path, user_module,
                                                                     monkeypatch):
    module, name = user_module
    ep = importlib.metadata.EntryPoint(name=name, value=module, group=methods.ENTRY_POINT_GROUP)
    monkeypatch.setattr(methods, "_entry_points", lambda: {name: ep})
    assert methods.known(name) and module not in sys.modules
    methods.check_names([name], "methods")                  # no method_modules needed
    methods.check_method_hparams({name: {"weight": 2.0}}, defer_unknown=True)
    assert module not in sys.modules
    assert methods.get(name).name == name                   # building imports it
    assert methods.user_module(name) == module


# ----------------------------------------------------------------------------- workers
def test_worker_processes_import_the_user_module(tmp_path, user_module):
    from cmkd.jobs import Job, ProcessExecutor, run_jobs

    module, name = user_module
    methods.import_modules([module])
    npz = pairs_file(tmp_path / "p.npz", n=90)
    common = dict(dataset="pairs", data_root=str(npz), model="mlp", epochs=1, batch_size=16,
                  device="cpu")
    teacher = Job(inputs=("a",), kind="teacher", model_options={"in_features": 6,
                                                                  "classes": 3}, **common)
    student = Job(inputs=("b",), method=name, hparams={"temperature": 2.0}, teacher=teacher,
                  model_options={"in_features": 4, "classes": 3}, **common)
    rows = run_jobs([student], executor=ProcessExecutor(1), cache=tmp_path / "cache",
                    progress=False)
    assert rows.method.tolist() == [name] and rows.hp_temperature.tolist() == [2.0]


def test_optional_parameters_may_be_left_out_of_a_params_file(root, tmp_path):
    values = yaml.safe_load((root / "params" / "smoke" / "06_c2kd.yaml").read_text())
    assert "method_modules" not in values                   # the stored smoke file omits them
    path = params_file(root, tmp_path, "06_c2kd")
    config = load_params(path, c2.Config)
    assert (config.method_modules, config.extra_methods, config.tensorboard) == ([], [], False)
    del values["epochs"]                                    # a required one may not be
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ParamError, match=rf"{path}: missing parameter\(s\): epochs"):
        load_params(path, c2.Config)
