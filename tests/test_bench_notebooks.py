"""`make bench ONLY=notebooks`: the recorded notebook times read from the manifests, and the
met / not met / undecided rule against a target."""

import json
import math

from cmkd.bench import notebooks as bn


def _row(nb, wall, cpu, trained=5, scratch=None, load=1.5):
    return {"notebook": nb, "wall s": wall, "CPU s": cpu, "jobs trained": trained,
            "from scratch": bool(trained) if scratch is None else scratch,
            "load (15 min)": load}


def test_the_cpu_bound_alone_says_not_met():
    # 2,700 CPU s on 2 cores: at least 22.5 min even on idle cores, over 20
    v, why = bn.verdict([_row("06_c2kd", 3000.0, 2700.0)], 20.0)
    assert v == "not met" and "22.5" in why
    # the same CPU seconds measured under load do not bound the idle time (they inflate there)
    v, why = bn.verdict([_row("06_c2kd", 5000.0, 2700.0, load=5.5)], 20.0)
    assert v == "undecided" and "load" in why
    v, _ = bn.verdict([_row("06_c2kd", 3000.0, 2700.0, load=math.nan)], 20.0)
    assert v == "undecided"


def test_a_wall_time_within_the_target_says_met_even_under_load():
    v, _ = bn.verdict([_row("04_a", 200.0, 300.0), _row("05_b", 250.0, 380.0)], 10.0)
    assert v == "met"  # 450 s of wall <= 600


def test_between_the_bounds_or_from_the_cache_is_undecided():
    # CPU bound 15 min <= 20 < 40 min of wall measured on a loaded machine
    v, why = bn.verdict([_row("06_c2kd", 2400.0, 1800.0)], 20.0)
    assert v == "undecided" and "idle" in why
    # every job from the cache: a short run that measures nothing
    v, why = bn.verdict([_row("06_c2kd", 30.0, 20.0, trained=0)], 20.0)
    assert v == "undecided" and "cache" in why
    v, why = bn.verdict([_row("06_c2kd", 30.0, math.nan, trained=math.nan)], 20.0)
    assert v == "undecided" and "not recorded" in why
    assert bn.verdict([], 20.0)[0] == "undecided"
    # notebooks 01-03 train outside the job cache: --refresh-jobs alone says from scratch
    v, _ = bn.verdict([_row("01_a", 30.0, 40.0, trained=0, scratch=True),
                       _row("06_c2kd", 900.0, 1700.0)], 20.0)
    assert v == "met"


def test_rows_come_from_the_manifests_of_the_profile(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    manifests = tmp_path / "reports" / "default" / "manifest"
    manifests.mkdir(parents=True)
    for nb, prov in (("06_c2kd", {"wall_seconds": 1500.0, "cpu_seconds": 2700.0,
                                  "jobs_trained": 200, "load_average": [2.0, 2.1, 2.2],
                                  "commit": "0123456789abcdef"}),
                     ("10_rgbd_segmentation", {"wall_seconds": 300.0}),
                     ("01_mvd", {"wall_seconds": 30.0, "cpu_seconds": 40.0, "jobs_trained": 0,
                                 "refresh_jobs": True})):
        (tmp_path / "notebooks" / f"{nb}.ipynb").write_text("{}")
        (manifests / f"{nb}.json").write_text(json.dumps({"provenance": prov}))
    monkeypatch.setattr("cmkd.reporting.repo_root", lambda: tmp_path)
    rows = {r["benchmark"]: r for r in bn.run("default")}
    six = rows["default: 06_c2kd"]
    assert six["CPU s"] == 2700.0 and six["2 idle cores, at least (min)"] == 22.5
    assert six["jobs trained"] == 200 and six["load (15 min)"] == 2.2
    assert six["commit"] == "012345678"
    assert rows["default: issue 15: notebook 06, default profile <= 20 min"]["target"] == \
        "not met"
    ten = rows["default: 10_rgbd_segmentation"]
    assert math.isnan(ten["CPU s"]) and math.isnan(ten["jobs trained"])
    assert not ten["from scratch"] and rows["default: 01_mvd"]["from scratch"]
    assert rows["default: issue 20: notebook 10 <= 6 min"]["target"] == "undecided"
    # 04 and 05 were never published on this profile
    assert rows["default: issue 18: notebooks 04 and 05 together <= 10 min"]["why"] == \
        "not run on this profile"


def test_jobs_trained_counts_jobs_stored_during_the_run_refreshed_ones_too(tmp_path,
                                                                           monkeypatch):
    """A manifest's jobs_trained: cache folders whose marker says they were stored since the run
    began - a job trained again under its old key (--refresh-jobs) counts, one from before does
    not, nor a temporary folder still being written."""
    from cmkd import reproduce
    from cmkd.jobs.cache import MARKER, TMP_PREFIX

    monkeypatch.setenv("CMKD_CACHE", str(tmp_path))
    began = 1_000_000.0
    for name, finished in [("old", began - 5), ("refreshed", began + 1), ("new", began + 2),
                           (TMP_PREFIX + "busy", began + 3)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / MARKER).write_text(json.dumps({"finished": finished}))
    (tmp_path / "unfinished").mkdir()  # no marker: an interrupted store
    assert reproduce._jobs_stored_since(began) == 2
    assert reproduce._jobs_stored_since(began + 10) == 0
