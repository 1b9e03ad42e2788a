"""Notebook 05 (MFH feature ranking): channel nullifying against a manual forward, KD from a
nullified teacher against plain KD, Grad-CAM against the closed-form CAM, Algorithm 1 on planted
features, the claims on planted results, and the paper-profile path end to end on RAVDESS and
VGGSound fixtures in their real layouts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from cmkd import methods, models, params
from cmkd.experiments import NOTEBOOKS
from cmkd.experiments import feature_ranking as fr
from cmkd.mfh import grad_cam, nullified_logits, rank_features, recovery_rate
from cmkd.params import ParamError
from cmkd.reporting import paper_value
from test_data_loaders import make_ravdess, make_vggsound

ROOT = Path(__file__).resolve().parents[1]


def _raw(profile: str) -> dict:
    return yaml.safe_load((ROOT / f"params/{profile}/05_feature_ranking.yaml").read_text())


def _config(profile: str = "smoke", **over) -> fr.Config:
    return params.from_mapping(fr.Config, {**_raw(profile), **over}, source="test")


def test_registered_and_every_profile_validates():
    assert NOTEBOOKS["05_feature_ranking"] == "cmkd.experiments.feature_ranking"
    for profile in ("smoke", "default", "paper"):
        _config(profile)
    with pytest.raises(ParamError, match="sweep_ratio"):
        _config(sweep_ratio=0.0)
    with pytest.raises(ParamError, match="ratios"):
        _config(ratios=[1.0])


def test_nullified_logits_match_a_manual_forward():
    torch.manual_seed(0)
    net = models.build("audio_cnn3", classes=4, channels=4).eval()
    x = torch.randn(5, 1, 16, 16)
    keep = [1, 3, 8]
    with torch.no_grad():
        pooled = net.features(x)["pooled"]
        mask = torch.zeros(16)
        mask[keep] = 1
        assert torch.allclose(nullified_logits(net, [x], "pooled", keep),
                              net.classifier(pooled * mask))
        h = net.block2(net.block1(x))
        h[:, [0, 2, 4, 5, 6]] = 0  # block2 has 8 channels; keep 1, 3, 7
        manual = net.classifier(net.block3(h).mean((2, 3)))
        assert torch.allclose(nullified_logits(net, [x], "block2", [1, 3, 7]), manual)
    with pytest.raises(ValueError, match="layer"):
        nullified_logits(net, [x], "nope", keep)


def test_kd_nullified_is_kd_when_every_channel_is_kept_and_checks_its_channels():
    torch.manual_seed(0)
    teacher = models.build("audio_cnn3", classes=4, channels=4).eval()
    student = models.build("lenet5", classes=4).train()
    batch = {"audio": torch.randn(6, 1, 16, 16), "image": torch.randn(6, 1, 28, 28),
             "label": torch.arange(6) % 4}
    kw = dict(student=student, teacher=teacher, classes=4, student_inputs=("image",),
              teacher_inputs=("audio",))
    hp = {"ce_weight": 0.0, "kd_weight": 1.0}
    plain = methods.build("kd", hp, **kw).step(batch, 0)["total"]
    full = methods.build("kd_nullified", {**hp, "keep": list(range(16))}, **kw).step(batch, 0)
    assert torch.allclose(plain, full["total"])
    part = methods.build("kd_nullified", {**hp, "keep": [0, 1]}, **kw)
    with torch.no_grad():
        expected = nullified_logits(teacher, [batch["audio"]], "pooled", [0, 1])
    assert torch.allclose(part.teacher_forward(batch), expected)
    with pytest.raises(ValueError, match="16 channels"):
        methods.build("kd_nullified", {**hp, "keep": [16]}, **kw)
    with pytest.raises(ValueError, match="layer"):
        methods.build("kd_nullified", {**hp, "layer": "fc9"}, **kw)


def test_cached_teacher_gives_the_per_batch_loss_and_gradients():
    import copy

    from cmkd.methods.kd_nullified import TeacherFeatures

    TeacherFeatures.clear()
    torch.manual_seed(0)
    teacher = models.build("audio_cnn3", classes=4, channels=4).eval()
    student = models.build("lenet5", classes=4)
    batch = {"audio": torch.randn(6, 1, 16, 16), "image": torch.randn(6, 1, 28, 28),
             "label": torch.arange(6) % 4}
    hp = {"ce_weight": 0.3, "kd_weight": 0.7, "temperature": 2.0, "keep": [0, 1, 5, 9]}

    def build(cache, net=teacher):
        m = methods.build("kd_nullified", {**hp, "cache_teacher": cache},
                          student=copy.deepcopy(student), teacher=net, classes=4,
                          student_inputs=("image",), teacher_inputs=("audio",))
        m.train()
        return m

    calls = []
    hook = teacher.block1.register_forward_hook(lambda m, i, o: calls.append(len(o)))
    grads = {}
    for cache in (False, True):
        m = build(cache)
        out = m.step(batch, 0)
        out["total"].backward()
        grads[cache] = (out["total"].detach(),
                        [p.grad.clone() for p in m.student.parameters()])
    # the per-batch forward, then one forward per item (each alone, whatever its batch)
    assert m.features_store is not None and calls == [6] + [1] * 6
    assert torch.allclose(grads[True][0], grads[False][0], atol=1e-6)
    for a, b in zip(grads[True][1], grads[False][1]):
        assert torch.allclose(a, b, atol=1e-6)
    # a later epoch (the items reshuffled) is served from the store: no teacher forward
    calls.clear()
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    shuffled = {k: v[perm] for k, v in batch.items()}
    with torch.no_grad():
        expected = nullified_logits(teacher, [shuffled["audio"]], "pooled", hp["keep"])
    got = build(True).teacher_forward(shuffled)
    assert torch.allclose(got, expected, atol=1e-6)
    assert calls == [6]  # the expected value's forward, none from the cached path
    hook.remove()
    # another teacher (other weights) has its own store; a block's output takes the per-batch
    # path
    other = models.build("audio_cnn3", classes=4, channels=4).eval()
    with torch.no_grad():
        expected = nullified_logits(other, [batch["audio"]], "pooled", hp["keep"])
    assert torch.allclose(build(True, other).teacher_forward(batch), expected, atol=1e-6)
    assert build(True).features_store.fingerprint != build(True, other).features_store.fingerprint
    blk = methods.build("kd_nullified", {**hp, "layer": "block2", "keep": [0, 1]},
                        student=student, teacher=teacher, classes=4,
                        student_inputs=("image",), teacher_inputs=("audio",))
    assert blk.features_store is None
    TeacherFeatures.clear()


def test_grad_cam_is_the_closed_form_cam_of_a_linear_head_on_pooled_maps():
    # global average pooling then one linear layer: d logit_t / d A_c = W[t, c] / (H W), so
    # Grad-CAM is ReLU(sum_c W[t, c] A_c) up to the positive factor 1 / (H W) (Zhou et al.)
    torch.manual_seed(0)
    net = models.build("audio_cnn3", classes=3, channels=4, hidden=0).eval()
    x = torch.randn(4, 1, 32, 32)
    target = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        a = net.features(x)["block3"]
        w = net.classifier.weight[target]  # (B, C)
        cam = F.relu(torch.einsum("bc,bchw->bhw", w, a))[:, None]
        cam = F.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
        cam = cam / cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
    got = grad_cam(net, x, "block3", target=target)
    assert torch.allclose(got, cam, atol=1e-5)
    # nullifying pooled channels zeroes their weights in the map
    keep = [0, 2]
    w2 = w.clone()
    w2[:, [1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]] = 0
    with torch.no_grad():
        cam2 = F.relu(torch.einsum("bc,bchw->bhw", w2, a))[:, None]
        cam2 = F.interpolate(cam2, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
        cam2 = cam2 / cam2.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
    assert torch.allclose(grad_cam(net, x, "block3", target=target, keep=keep), cam2, atol=1e-5)


def test_algorithm1_on_features_ranks_the_shared_channels_first():
    # planted truth: channels 0-3 of x^a carry the class, which x^b also carries; 4-11 are noise
    g = torch.Generator().manual_seed(0)
    n, k = 600, 3
    y = torch.arange(n) % k
    centres = torch.randn(k, 4, generator=g) * 2
    xa = torch.cat([centres[y] + 0.5 * torch.randn(n, 4, generator=g),
                    torch.randn(n, 8, generator=g)], 1)
    xb = torch.randn(k, 6, generator=g)[y] * 2 + 0.5 * torch.randn(n, 6, generator=g)
    out = rank_features(xa, xb, y, permutations=[1, 20], epochs=20, hidden=16, seed=0)
    for m in (1, 20):
        p = out["salience"][m]
        assert p.shape == (12,) and float(p.max()) == pytest.approx(1.0)
        assert recovery_rate(p, [0, 1, 2, 3]) == 1.0
    assert out["history"].shape == (20, 3)
    assert out["history"][-1, 1] < out["history"][0, 1]  # f1's cross entropy falls


def test_grid_derives_teachers_by_kept_channels():
    p = np.linspace(1, 0, 8)  # channel 0 most salient
    assert list(fr.keep_sets(p, "general", 0.25, 0)) == [0, 1, 2, 3, 4, 5]
    assert list(fr.keep_sets(p, "specific", 0.25, 0)) == [2, 3, 4, 5, 6, 7]
    r1, r2 = fr.keep_sets(p, "random", 0.5, 7), fr.keep_sets(p, "random", 0.5, 7)
    assert list(r1) == list(r2) and len(set(r1)) == 4
    assert list(fr.keep_sets(p, "official_half", 0.25, 0)) == [0, 1, 2, 3]
    config = _config(official_half_mask=True, rhos=[0.0, 0.5])
    cells = fr._cells(config)
    assert ("table", "official_half", 0.5, 10, 0.5) in cells
    assert {c[0] for c in cells} == {"table", "fig5", "fig6"}
    base = fr.base_jobs(config)
    assert base["teacher", 0].model == "audio_cnn3" and base["teacher", 0].inputs == ("audio",)
    assert base["other", 0].inputs == ("image",) and base["nokd", 0].teacher is None


def _planted(order=("specific", "random", "regular", "general"), runs=4, n=500, seed=0):
    """Results with known accuracies rising in ``order`` (10 points apart)."""
    rng = np.random.default_rng(seed)
    truth = {kind: 50 + 10 * i for i, kind in enumerate(order)}
    rows = []

    def add(grid, kind, ratio, m, p, r):
        c = rng.random(n) < p / 100
        rows.append({"grid": grid, "kind": kind, "ratio": ratio, "M": m, "rho": 0.0, "run": r,
                     "acc": 100 * c.mean(), "teacher_acc": 80.0, "kept": 4,
                     "test_correct": "".join("1" if v else "0" for v in c),
                     "key": f"{grid}{kind}{ratio}{m}{r}"})

    for r in range(runs):
        add("base", "nokd", np.nan, np.nan, 40, r)
        add("base", "teacher", np.nan, np.nan, 85, r)
        add("table", "regular", 0.0, 10, truth["regular"], r)
        for ratio in (0.25, 0.5):
            for kind in ("specific", "random", "general"):
                add("table", kind, ratio, 10, truth[kind], r)
        for ratio, p in ((0.125, 75), (0.875, 55)):
            add("fig5", "general", ratio, 10, p, r)
        for m, p in ((1, 60), (5, 70), (10, 70)):
            add("fig6", "general", 0.5, m, p, r)
    df = pd.DataFrame(rows)
    df.attrs["n_test"] = n
    return df


def test_claims_on_planted_results():
    held = fr.claims(_planted())
    assert list(held.verdict[:4]) == ["held"] * 4, held[["claim", "interval", "verdict"]]
    # equality within 1 point needs a large test set: M 5 and M 10 share their accuracy
    assert fr.claims(_planted(n=40_000)).verdict.iloc[4] == "held"
    wrong = fr.claims(_planted(order=("general", "regular", "random", "specific")))
    assert list(wrong.verdict[:3]) == ["NOT held"] * 3
    t8 = fr.table8(_planted())
    assert list(t8["r (%)"]) == [25.0, 50.0]
    assert t8["general mean"].iloc[0] == pytest.approx(80, abs=4)
    s5 = fr.sweep(_planted(), "fig5")
    assert list(s5.ratio) == [0.0, 0.125, 0.875]  # regular KD stands at r = 0


def test_paper_ids_name_published_values():
    config = _config("paper")
    assert config.dataset == "ravdess"
    ids = fr.paper_ids(config)
    assert len(ids) == 12 and paper_value(ids["specific", 0.5, 0.0])["value"] == 42.66
    vgg = _config("paper", dataset="vggsound", teacher_model="resnet18", metric="map")
    assert paper_value(fr.paper_ids(vgg)["general", 0.5, 0.5])["value"] == 31.98
    rn50 = _config("paper", dataset="vggsound", teacher_model="resnet50", direction="v2a")
    assert paper_value(fr.paper_ids(rn50)["regular", 0.5, 0.0])["value"] == 58.87


def _tiny(config: fr.Config, **over) -> fr.Config:
    base = dict(n_runs=1, teacher_epochs=1, epochs=1, patience=0, batch_size=4, device="cpu",
                ratios=[0.5], sweep_ratios=[0.25], sweep_permutations=[1, 2, 3],
                permutations=2, rank_epochs=2, gradcam_images=2)
    return params.from_mapping(fr.Config, {**vars(config), **base, **over}, source="test")


def test_paper_profile_path_runs_end_to_end_on_ravdess_and_vggsound_fixtures(tmp_path):
    make_ravdess(tmp_path / "ravdess")
    config = _tiny(_config("paper"), ravdess_root=str(tmp_path / "ravdess"),
                   teacher_options={"channels": 2},
                   student_options={"channels": 2, "in_channels": 3, "modality": "image"})
    df = fr.run(config, cache=tmp_path / "cache", progress=False)
    assert set(df.grid) == {"base", "table", "fig5", "fig6"} and df.attrs["channels"] == 8
    assert df.acc.between(0, 100).all() and df.teacher_acc.dropna().between(0, 100).all()
    curves = fr.histories(config, df, tmp_path / "cache")
    out = fr.claims(df, curves)
    assert set(out.verdict) <= {"held", "NOT held", "undecided"} and len(out) == 6
    assert set(fr.measured(df, config)) == {f"mfh.table8.r_50.{k}_acc" for k in fr.KIND_IDS}
    # notebook 09's entry point: the same derived teacher and student job as the table's
    one = fr.derived_teacher(config, "general", 0.5, cache=tmp_path / "cache")
    row = df[(df.grid == "table") & (df.kind == "general")].iloc[0]
    assert one["student"].key == row.key and len(one["keep"]) == row.kept
    assert one["student"].hparams["keep"] == [int(k) for k in one["keep"]]
    with pytest.raises(ValueError, match="kind"):
        fr.derived_teacher(config, "best", 0.5)
    cams = fr.gradcam(config, tmp_path / "cache")
    assert cams["regular"].shape == cams["general"].shape == (2, 8, 16)
    for fig in (fr.plot_table8(df), fr.plot_sweeps(df), fr.plot_salience(df),
                fr.plot_curves(curves), fr.plot_gradcam(cams)):
        assert fig is not None

    make_vggsound(tmp_path / "VGGSound")
    vgg = _tiny(_config("paper"), dataset="vggsound", vggsound_root=str(tmp_path / "VGGSound"),
                image_size=16, teacher_model="resnet18", teacher_options={"in_channels": 1},
                student_model="resnet18", student_options={"frames": 3}, metric="map",
                official_half_mask=True, rhos=[0.0], sweep_ratios=[],
                sweep_permutations=[], gradcam_images=0, optimizer="adamw", lr=1e-3)
    df = fr.run(vgg, cache=tmp_path / "cache", progress=False)
    assert "official_half" in set(df.kind) and df.attrs["channels"] == 512
    half = df[df.kind == "official_half"]
    assert (half.kept == 256).all()
    assert set(fr.measured(df, vgg)) == {f"mfh.table9.rho_0.{k}_map" for k in fr.KIND_IDS}


def test_paper_profile_names_a_missing_folder_before_any_compute(tmp_path):
    config = _config("paper", ravdess_root=str(tmp_path / "none"))
    with pytest.raises(ParamError, match="ravdess_root"):
        fr.run(config, cache=tmp_path / "cache", progress=False)
