"""`cmkd diagnose`: input errors before any training, the Algorithm 1 estimate against a closed
form, the verdict rule, and end-to-end runs on a user-shaped file and on a registry dataset."""

import json

import numpy as np
import pytest
import torch

from cmkd import cli
from cmkd.data import specs
from cmkd.diagnose import (
    HELP,
    HURT,
    UNCLEAR,
    DiagnoseError,
    Settings,
    diagnose,
    predict,
    salience,
    within_class_r2,
)


def _pairs(path, n=90, k=3, da=5, db=4, seed=0, **replace):
    """A user-shaped pairs file: b carries the class, a a noisy copy of b's signal."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = rng.normal(size=(k, db)) * 3
    b = centres[y] + rng.normal(size=(n, db))
    a = np.concatenate([b[:, :2] + rng.normal(size=(n, 2)), rng.normal(size=(n, da - 2))], 1)
    arrays = {"a": a.astype(np.float32), "b": b.astype(np.float32), "y": y}
    arrays.update(replace)
    np.savez(path, **arrays)
    return path


def _cache_empty(cache):
    return not cache.exists() or not any(cache.iterdir())


FAST = dict(seeds=1, epochs=2, patience=None, permutations=3, progress=False)


@pytest.mark.parametrize("change, words", [
    (lambda a, b, y: dict(b=b[:-1]), "N"),
    (lambda a, b, y: dict(a=np.where(np.arange(a.size).reshape(a.shape) == 7, np.nan, a)),
     "NaN"),
    (lambda a, b, y: dict(y=np.zeros_like(y)), "single class"),
    (lambda a, b, y: dict(y=np.where(np.arange(len(y)) < 4, 2, np.where(y == 2, 0, y))),
     "too few train items per class"),
    (lambda a, b, y: dict(a=a.reshape(len(a), 5, 1)), "a"),
    (lambda a, b, y: dict(b=np.zeros((len(b), 1, 4, 4), np.float32)), "sides >= 8"),
])
def test_bad_input_is_a_clear_error_before_any_training(tmp_path, change, words):
    good = np.load(_pairs(tmp_path / "good.npz"))
    bad = _pairs(tmp_path / "bad.npz", **change(good["a"], good["b"], good["y"]))
    cache = tmp_path / "cache"
    with pytest.raises(DiagnoseError) as err:
        diagnose(bad, "a", "b", out=tmp_path / "out", settings=Settings(cache=str(cache), **FAST))
    assert words in str(err.value)
    assert str(bad.name) in str(err.value) or "bad.npz" in str(err.value)
    assert _cache_empty(cache) and not (tmp_path / "out").exists()


def test_too_few_held_out_items(tmp_path):
    split = np.array(["train"] * 80 + ["test"] * 10)
    path = _pairs(tmp_path / "few.npz", split=split)
    with pytest.raises(DiagnoseError, match="held-out split has 10 items"):
        diagnose(path, "a", "b", settings=Settings(cache=str(tmp_path / "c"), **FAST))


@pytest.mark.parametrize("args, words", [
    (dict(teacher="a", student="a"), "both 'a'"),
    (dict(teacher="x"), "unknown modality 'x'"),
    (dict(root="/tmp"), "--root"),
])
def test_bad_names(tmp_path, args, words):
    path = _pairs(tmp_path / "p.npz")
    with pytest.raises(DiagnoseError, match=words):
        diagnose(path, settings=Settings(cache=str(tmp_path / "c"), **FAST), **args)


def test_unknown_dataset_and_embedded_root(tmp_path):
    with pytest.raises(DiagnoseError, match="neither a file"):
        diagnose("no_such_set", settings=Settings(**FAST))
    with pytest.raises(DiagnoseError, match="embedded"):
        diagnose("avdigits", root=str(tmp_path), settings=Settings(**FAST))
    with pytest.raises(DiagnoseError, match="with --root"):
        diagnose("ave", settings=Settings(**FAST))
    with pytest.raises(DiagnoseError, match="seeds"):
        diagnose("avdigits", settings=Settings(seeds=0))


def test_cli_bad_input_status_2(tmp_path, capsys):
    bad = _pairs(tmp_path / "bad.npz", y=np.zeros(90, int))
    code = cli.main(["diagnose", str(bad), "--teacher", "a", "--student", "b", "--out",
                     str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
    assert code == 2
    err = capsys.readouterr().err
    assert "single class" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, words", [
    (["--executor", "dask"], "executor dask needs exactly one of a scheduler address"),
    (["--executor", "dask", "--cluster", "missing.yaml"], "missing.yaml does not exist"),
    (["--scheduler", "tcp://x:1"], "is for executor dask, not serial"),
    (["--executor", "local", "--workers", "0"], "workers must be an integer >= 1"),
])
def test_cli_executor_checked_before_any_training(tmp_path, capsys, argv, words):
    path = _pairs(tmp_path / "p.npz")
    cache, out = tmp_path / "cache", tmp_path / "out"
    code = cli.main(["diagnose", str(path), "--teacher", "a", "--out", str(out), "--cache",
                     str(cache), *argv])
    assert code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert _cache_empty(cache) and not out.exists()


class _Recording:
    """An executor that runs the jobs in this process and records them (and its closing)."""

    def __init__(self):
        self.keys, self.closed = [], False

    def map(self, fn, jobs):
        for job in jobs:
            self.keys.append(job.key)
            yield fn(job)

    def close(self):
        self.closed = True


def test_cli_executor_trains_every_job_and_is_closed(tmp_path, capsys, monkeypatch):
    from cmkd.jobs.cache import entries
    from cmkd.jobs.cluster import ExecutorChoice

    built = []

    def build(choice, quiet=False):
        built.append((choice, _Recording()))
        return built[-1][1]

    monkeypatch.setattr(ExecutorChoice, "build", build)
    path = _pairs(tmp_path / "p.npz", n=150)
    out = tmp_path / "out"
    code = cli.main(["diagnose", str(path), "--teacher", "a", "--out", str(out), "--cache",
                     str(tmp_path / "cache"), "--seeds", "2", "--epochs", "2", "--pilot",
                     "--executor", "local", "--workers", "3", "--retries", "1"])
    assert code == 0, capsys.readouterr().err
    (choice, executor), = built
    assert choice == ExecutorChoice("local", workers=3, retries=1)
    assert executor.closed
    d = json.loads((out / "diagnosis.json").read_text())
    # 2 modalities x 2 seeds unimodal models, then the pilot's 3 methods x 2 seeds: every
    # job trained went through the executor, none in this process
    assert len(executor.keys) == len(set(executor.keys)) == 4 + 6
    trained = {e["key"] for e in entries(tmp_path / "cache") if e["complete"]}
    assert trained == set(executor.keys)
    assert set(d["directions"][0]["pilot"]["accuracy"]) == {"nokd", "kd", "c2kd"}


class _Teacher(torch.nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.classifier = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.classifier.weight.data = weight


def test_within_class_r2_against_sklearn():
    """The adjusted within-class R^2 equals sklearn's R^2 of the class-centred columns, adjusted
    for the class means and the regressors."""
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(1)
    n, k = 300, 3
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, 4)) + y[:, None]
    x = np.stack([z[:, 0] - 2 * z[:, 2] + rng.normal(size=n), rng.normal(size=n) + 3 * y], 1)
    got = within_class_r2(torch.tensor(x), torch.tensor(z), torch.tensor(y)).numpy()

    def centred(v):
        return v - np.stack([v[y == c].mean(0) for c in range(k)])[y]

    xc, zc = centred(x), centred(z)
    for c in range(2):
        r2 = LinearRegression(fit_intercept=False).fit(zc, xc[:, c]).score(zc, xc[:, c])
        # score's R^2 is against the column's own mean, 0 after centring
        adjusted = 1 - (1 - r2) * (n - k) / (n - k - 4)
        assert got[c] == pytest.approx(max(adjusted, 0.0), abs=1e-9)
    assert got[0] > 0.7 and got[1] < 0.05


def test_gamma_hat_against_a_planted_truth():
    """Teacher channels = class mean + item noise; the student's logits reproduce the item noise
    of channels 0 and 1 only (modality-general), the others are the teacher's own
    (modality-specific).  Small logits (softmax near linear, p = (1 + z - mean z) / K): the
    decisiveness of channel c is proportional to |J w_c|^2 var(h_c), so gamma_hat is the share
    of that total carried by channels 0 and 1."""
    g = torch.Generator().manual_seed(0)
    n, c, k = 4000, 6, 4
    y = torch.randint(0, k, (n,), generator=g)
    means = torch.randn(k, c, generator=g, dtype=torch.float64)
    noise = torch.randn(n, c, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2, c)
    h = means[y] + noise
    w = torch.randn(k, c, generator=g, dtype=torch.float64) * 0.02
    out = {"model": _Teacher(w), "pooled": h, "logits": h @ w.T}
    shared = [0, 1]
    student = (noise[:, shared] @ torch.randn(2, k, generator=g, dtype=torch.float64)
               + torch.randn(k, k, generator=g, dtype=torch.float64)[y])
    j = (torch.eye(k, dtype=torch.float64) - 1 / k) / k  # d softmax / d z at z = 0
    contrib = ((j @ w) ** 2).sum(0) * h.var(0)
    expected = float(contrib[shared].sum() / contrib.sum())
    got = salience(out, student, y, permutations=8, seed=0)
    assert got["gamma_hat"] == pytest.approx(expected, abs=0.03)
    assert got["general"][shared] == pytest.approx(1.0, abs=1e-6)
    assert (got["general"][2:] < 0.02).all()
    assert np.abs(got["algorithm1"]).max() == pytest.approx(1.0)
    # a student modality that shares nothing item by item: gamma_hat near 0
    other = torch.randn(n, k, generator=g, dtype=torch.float64) + means[y, :k]
    assert salience(out, other, y, permutations=3, seed=0)["gamma_hat"] < 0.02


@pytest.mark.parametrize("stronger, weaker, krc, gamma, keep, kd, c2", [
    (True, False, 0.3, 0.8, 0.8, HELP, HELP),
    (False, True, 0.3, 0.8, 0.8, HURT, UNCLEAR),
    (True, False, -0.1, 0.8, 0.4, HURT, UNCLEAR),
    (True, False, 0.3, 0.2, 0.8, UNCLEAR, UNCLEAR),
    (False, False, 0.3, 0.8, 0.8, UNCLEAR, HELP),
    (False, True, -0.1, 0.3, 0.3, HURT, HURT),
])
def test_rule(stronger, weaker, krc, gamma, keep, kd, c2):
    got_kd, got_c2 = predict(stronger, weaker, krc, gamma, keep)
    assert (got_kd["verdict"], got_c2["verdict"]) == (kd, c2)


def test_end_to_end_on_a_file_with_pilot(tmp_path, capsys):
    path = _pairs(tmp_path / "mine.npz", n=150)
    out = tmp_path / "out"
    code = cli.main(["diagnose", str(path), "--teacher", "b", "--student", "a", "--out",
                     str(out), "--cache", str(tmp_path / "cache"), "--seeds", "2", "--epochs",
                     "3", "--pilot", "--pilot-epochs", "2", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "b -> a: KD" in printed and "pilot" in printed
    for name in ("REPORT.md", "report.html", "diagnosis.json", "imbalance.png", "krc.png",
                 "salience.png"):
        assert (out / name).is_file(), name
    d = json.loads((out / "diagnosis.json").read_text())
    assert d["kd"]["verdict"] in (HELP, HURT, UNCLEAR)
    assert d["c2kd"]["verdict"] in (HELP, HURT, UNCLEAR)
    (dr,) = d["directions"]
    assert (dr["teacher"], dr["student"]) == ("b", "a")
    assert 0 <= dr["krc"]["keep_share"] <= 1 and -1 <= dr["krc"]["mean"] <= 1
    assert set(dr["pilot"]["accuracy"]) == {"nokd", "kd", "c2kd"}
    # the accuracies are those of the held-out items: recompute from the modalities' seeds
    for m in ("a", "b"):
        v = d["modalities"][m]
        assert v["accuracy"] == pytest.approx(np.mean(list(v["accuracy_seeds"].values())),
                                              abs=1e-6)
    assert "<table>" in (out / "report.html").read_text()
    # a second run trains nothing: every job comes from the cache
    before = sorted(p.name for p in (tmp_path / "cache").iterdir())
    again = diagnose(path, "b", "a", settings=Settings(cache=str(tmp_path / "cache"), seeds=2,
                                                       epochs=3, pilot=True, pilot_epochs=2,
                                                       device="cpu", progress=False))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == before
    assert again["kd"]["verdict"] == d["kd"]["verdict"]


def test_registry_dataset_both_directions_restores_the_spec(tmp_path):
    before = specs.SPECS["mfeat"]
    r = diagnose("mfeat", settings=Settings(cache=str(tmp_path / "c"), **FAST))
    assert specs.SPECS["mfeat"] is before
    assert [(d["teacher"], d["student"]) for d in r["directions"]] == [("fou", "kar"),
                                                                       ("kar", "fou")]
    assert set(r["kd"]["by_direction"]) == {"fou->kar", "kar->fou"}
    r = diagnose("mfeat", "zer", "pix", settings=Settings(cache=str(tmp_path / "c"), **FAST))
    assert specs.SPECS["mfeat"] is before
    assert r["input"]["modalities"] == ["zer", "pix"]
    assert r["directions"][0]["channels"] == specs.MFEAT_HIDDEN[-1]


def test_images_train_the_registry_cnn(tmp_path):
    """(N, C, H, W) arrays get the registry's CNN (specs.PAIRS_CNN); its penultimate channels
    are what Algorithm 1 ranks."""
    rng = np.random.default_rng(0)
    n, k = 150, 3
    y = np.arange(n) % k
    a = rng.normal(size=(n, 1, 8, 8)).astype(np.float32) + y[:, None, None, None]
    b = rng.normal(size=(n, 6)).astype(np.float32) + y[:, None]
    np.savez(tmp_path / "img.npz", a=a, b=b, y=y)
    r = diagnose(tmp_path / "img.npz", "a", "b", settings=Settings(cache=str(tmp_path / "c"),
                                                                     **FAST))
    assert r["modalities"]["a"]["model"] == specs.PAIRS_CNN
    assert r["modalities"]["b"]["model"] == "mlp"
    (d,) = r["directions"]
    assert d["channels"] == len(d["salience"][0]["decisive"]) > 0
    assert r["kd"]["verdict"] in (HELP, HURT, UNCLEAR)
