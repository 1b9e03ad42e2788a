"""Notebook 02's official-code options: the modality-general teachers' training draw."""

from dataclasses import replace

import pandas as pd
import pytest

from cmkd.experiments import modality_general as mg
from cmkd.params import ParamError, from_mapping

TINY = dict(seed=3, n_runs=1, epochs=20, lr=0.1, n_train=60, n_test=60, rho=0.5, loss_scale=2.0,
            temperature=1.0, kl_reduction="batchmean", xs1=10, xs2=[5], alg1_epochs=5,
            alg1_lr=0.01, alg1_momentum=0.9, permutations=2, general_teacher_draw="teachers",
            random_with_replacement=False, device="cpu")


def test_teacher_draw():
    for draw, index in (("teachers", 0), ("students", 1)):
        assert mg.teacher_draw("regular", draw) == 0, "the regular teacher keeps its own draw"
        for kind in ("gt", "random", "alg1"):
            assert mg.teacher_draw(kind, draw) == index
    with pytest.raises(ValueError, match="general_teacher_draw must be one of"):
        mg.teacher_draw("gt", "test")
    with pytest.raises(ValueError, match="kind must be one of"):
        mg.teacher_draw("regular_swapped", "teachers")


def test_students_draw_moves_only_the_modality_general_teachers():
    ours = mg.run(from_mapping(mg.Config, TINY))
    official = mg.run(from_mapping(mg.Config, dict(TINY, general_teacher_draw="students")))
    key = ["teacher", "run", "xs2"]
    a, b = ours.set_index(key).sort_index(), official.set_index(key).sort_index()
    same = ["regular", "regular_swapped"]
    pd.testing.assert_frame_equal(a.loc[same], b.loc[same])
    general = ["gt", "random", "alg1"]
    assert (a.loc[general, "channels"] == b.loc[general, "channels"]).all()
    moved = a.loc[general, ["teacher_acc", "student_acc"]] != b.loc[general,
                                                                    ["teacher_acc", "student_acc"]]
    assert moved.to_numpy().any(), "a teacher trained on another draw must change something"


def test_config_validates_the_options():
    with pytest.raises(ParamError, match="'general_teacher_draw': 'test' is not allowed"):
        from_mapping(mg.Config, dict(TINY, general_teacher_draw="test"))
    with pytest.raises(ParamError, match="'random_with_replacement': expected bool"):
        from_mapping(mg.Config, dict(TINY, random_with_replacement=1))
    cfg = replace(from_mapping(mg.Config, TINY), random_with_replacement=True)
    df = mg.run(cfg)
    rnd = df[df.teacher == "random"]
    assert (rnd.distinct <= rnd.channels).all() and (df[df.teacher == "gt"].distinct == 5).all()


def _planted(teacher_loss=14.0, student_gain=3.0, runs=6):
    """Table 2's rows for three settings: the 'gt' and 'alg1' teachers lose ``teacher_loss``
    points against the regular one and their students gain ``student_gain`` over regular KD,
    with a spread of about 1 point between runs (the same offsets in every setting)."""
    spread = [-1.0, 0.5, 1.2, -0.4, 0.2, -0.5][:runs]
    rows = []
    for xs2, gamma in ((5, 1 / 3), (10, 0.5), (30, 0.75)):
        for r, e in enumerate(spread):
            for kind, t, s in (("regular", 80.0, 70.0),
                               ("gt", 80.0 - teacher_loss + e, 70.0 + student_gain - e),
                               ("alg1", 80.0 - teacher_loss - e, 70.0 + student_gain + e)):
                rows.append({"xs1": 10, "xs2": xs2, "gamma": gamma, "run": r, "teacher": kind,
                             "teacher_acc": t, "student_acc": s, "nokd_acc": 65.0})
    return pd.DataFrame(rows)


GT = "modality-general: ground-truth shared channels: loses teacher accuracy yet its student " \
     "gains over regular KD"
LOSS = "the modality-general teacher loses more than 10 points of accuracy"


def test_claims_on_planted_runs():
    out = mg.claims(_planted())
    assert list(out.columns) == ["artefact", "claim", "evidence", "interval", "verdict"]
    assert out.verdict.tolist() == ["held"] * 3
    ev = out.set_index("claim").evidence
    assert ev[GT].startswith("teacher: -14.00 [") and "; student: +3.00 [" in ev[GT]
    assert ev[GT].endswith("points over 18 runs; both signs (means) in 3 of 3 settings")
    assert ev[LOSS].startswith("teacher change per gamma (below -10 to hold): gamma 0.33: "
                               "-14.00 [")
    # a loss of 10.5 points cannot be told from 10 with these runs; no gain is undecided
    v = mg.claims(_planted(teacher_loss=10.5, student_gain=0.0)).set_index("claim").verdict
    assert v[GT] == "undecided" and v[LOSS] == "undecided"
    # the teacher gains instead of losing: refuted, whatever the student does
    v = mg.claims(_planted(teacher_loss=-3.0)).set_index("claim").verdict
    assert v[GT] == "NOT held" and v[LOSS] == "NOT held"
