"""cmkd.jobs.builders: a Builder makes the same jobs (the same keys, so the same cached results)
as the explicit Job(...) calls they stand for."""

from __future__ import annotations

import pytest

from cmkd.jobs import Job
from cmkd.jobs.builders import Builder, Training

OPTIM = {"optimizer": "sgd", "lr": 0.02, "momentum": 0.9}
HPARAMS = {"kd": {"temperature": 4.0}, "c2kd": {"omega": 0.1, "lambda1": 0.5},
           "c2kd_bd": {"lambda3": 2.0}}
TRAINING = Training(optim=OPTIM, epochs=2, teacher_epochs=3, batch_size=16, device="cpu",
                    workers=1, method_hparams=HPARAMS)
PARAMS = {"image_size": 32, "cremad_root": "data/CREMA-D", "crisismmd_root": "/abs/crisis",
          "crisismmd_text_encoder": "stub_encoders:text",
          "crisismmd_image_encoder": "stub_encoders:image",
          "crisismmd_text_dim": 16, "crisismmd_image_dim": 12}
COMMON = dict(optim=OPTIM, batch_size=16, device="cpu", workers=1)


@pytest.fixture
def builder(tmp_path, monkeypatch):
    monkeypatch.setenv("CMKD_ROOT", str(tmp_path))  # relative roots resolve here
    return Builder(PARAMS, TRAINING)


def avdigits_teacher(modality, key, seed):
    return Job(dataset="avdigits", model="avdigits_cnn", inputs=(key,), kind="teacher",
               model_options={"modality": key, "classes": 10}, epochs=3, seed=seed, **COMMON)


def same(a: Job, b: Job) -> None:
    assert a.config() == b.config()
    assert a.key == b.key


def test_teacher(builder):
    same(builder.teacher("avdigits", "audio", 3), avdigits_teacher("audio", "audio", 3))
    same(builder.teacher("avdigits", "visual", 4), avdigits_teacher("visual", "image", 4))


def test_students_of_both_directions_share_the_unimodal_teacher(builder):
    a2v = builder.student("avdigits", "a2v", 3, "kd")
    same(a2v, Job(dataset="avdigits", model="avdigits_cnn", inputs=("image",), method="kd",
                  hparams={"temperature": 4.0}, teacher=avdigits_teacher("audio", "audio", 3),
                  model_options={"modality": "image", "classes": 10}, epochs=2, seed=3,
                  **COMMON))
    v2a = builder.student("avdigits", "v2a", 3, "dist", row={"kd_weight": 2.0})
    same(v2a, Job(dataset="avdigits", model="avdigits_cnn", inputs=("audio",), method="dist",
                  hparams={"kd_weight": 2.0}, teacher=avdigits_teacher("visual", "image", 3),
                  model_options={"modality": "audio", "classes": 10}, epochs=2, seed=3,
                  **COMMON))
    # every student of a direction and seed names the one teacher job
    assert builder.student("avdigits", "a2v", 3, "c2kd").teacher.key == a2v.teacher.key


def test_presets_take_the_grids_and_the_rows_hyperparameters(builder):
    job = builder.student("avdigits", "a2v", 0, "c2kd_bd", row={"omega": 0.3})
    same(job, Job(dataset="avdigits", model="avdigits_cnn", inputs=("image",), method="c2kd",
                  hparams={"omega": 0.3, "lambda1": 0.5, "lambda3": 2.0, "proxy": False,
                           "ofs": False, "nt": False},
                  teacher=avdigits_teacher("audio", "audio", 0),
                  model_options={"modality": "image", "classes": 10}, epochs=2, seed=0,
                  **COMMON))


def test_methods_without_a_teacher_get_none(builder):
    for method in ("nokd", "dlb", "zipf"):
        job = builder.student("avdigits", "a2v", 1, method)
        same(job, Job(dataset="avdigits", model="avdigits_cnn", inputs=("image",),
                      method=method, model_options={"modality": "image", "classes": 10},
                      epochs=2, seed=1, **COMMON))
        assert job.teacher is None
    # even when one is given
    fused = builder.fusion_teacher("avdigits", "fusion_concat", "a2v", 1)
    assert builder.student("avdigits", "a2v", 1, "nokd", teacher=fused).teacher is None


def test_fusion_teacher_and_a_student_of_it(builder):
    fused = builder.fusion_teacher("avdigits", "fusion_ogm_ge", "v2a", 2)
    explicit = Job(dataset="avdigits", model="fusion_ogm_ge", inputs=("image", "audio"),
                   kind="teacher", method="ogm_ge",
                   model_options={"classes": 10, "modalities": ("image", "audio"),
                                  "encoders": ("avdigits_cnn", "avdigits_cnn"),
                                  "encoder_options": ({}, {})}, epochs=3, seed=2, **COMMON)
    same(fused, explicit)
    concat = builder.fusion_teacher("avdigits", "fusion_concat", "a2v", 2)
    assert concat.method == "nokd" and concat.inputs == ("audio", "image")
    student = builder.student("avdigits", "v2a", 2, "kd", teacher=fused)
    same(student, Job(dataset="avdigits", model="avdigits_cnn", inputs=("audio",), method="kd",
                      hparams={"temperature": 4.0}, teacher=explicit,
                      model_options={"modality": "audio", "classes": 10}, epochs=2, seed=2,
                      **COMMON))


def test_real_datasets_take_their_roots_and_loader_options(builder, tmp_path):
    job = builder.student("cremad", "a2v", 0, "kd")
    teacher = Job(dataset="cremad", model="resnet18", inputs=("audio",), kind="teacher",
                  model_options={"in_channels": 1, "classes": 6},
                  dataset_options={"frames": 1, "image_size": 32},
                  data_root=str(tmp_path / "data" / "CREMA-D"), epochs=3, seed=0, **COMMON)
    same(job, Job(dataset="cremad", model="resnet18", inputs=("image",), method="kd",
                  hparams={"temperature": 4.0}, teacher=teacher,
                  model_options={"frames": 1, "classes": 6},
                  dataset_options={"frames": 1, "image_size": 32},
                  data_root=str(tmp_path / "data" / "CREMA-D"), epochs=2, seed=0, **COMMON))
    crisis = builder.student("crisismmd", "v2a", 0, "nokd")  # image teaches text: text student
    loader = {"image_size": 32, "text_encoder": "stub_encoders:text",
              "image_encoder": "stub_encoders:image"}
    same(crisis, Job(dataset="crisismmd", model="mlp", inputs=("text",),
                     model_options={"modality": "text", "hidden": (256, 256), "classes": 8,
                                    "in_features": 16},
                     dataset_options=loader, data_root="/abs/crisis", epochs=2, seed=0,
                     **COMMON))
