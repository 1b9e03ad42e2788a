"""cmkd.reporting: paper_entry (a published number found by its fields: table, dataset,
direction, method, variant, ... rather than by rebuilding its id) and the claims' record and
rendering in REPORT.md (verdicts with their intervals; old records with a boolean held)."""
import json
import re

import pandas as pd
import pytest

from cmkd.reporting import paper_entry, paper_value, paper_values


@pytest.mark.parametrize("fields, key", [
    (dict(table=3, dataset="ave", direction="a2v", method="c2kd", variant="full"),
     "c2kd_t3_ave_a2v_c2kd_full"),
    (dict(table=3, dataset="ave", direction="a2v", method="c2kd", variant="partial"),
     "c2kd_t3_ave_a2v_c2kd_partial"),
    # Table 1's C2KD row has no variant: variant None selects it
    (dict(table=1, dataset="vggsound", direction="v2a", method="c2kd", variant=None),
     "c2kd_t1_vggsound_v2a_c2kd"),
    (dict(table=6, dataset="crisismmd", direction="i2t", method="zipfkd"),
     "c2kd_t6_crisismmd_i2t_zipfkd"),
    (dict(table=7, dataset="ave", direction="a2v", method="nkd_cat", variant="teacher"),
     "c2kd_t7_ave_a2v_nkd_cat_teacher"),
    (dict(table=5, dataset="ave", direction="a2v", method="c2kd_bd", variant=None),
     "c2kd_t5_ave_a2v_c2kd_bd"),
])
def test_one_entry_by_its_fields(fields, key):
    entry = paper_entry(**fields)
    assert entry is not None and entry["id"] == key
    assert entry == paper_value(key)  # the same record as by id (with its file)
    assert entry["file"] == "c2kd.yaml"
    for k, v in fields.items():
        assert entry.get(k) == v


def test_a_field_the_entry_lacks_counts_as_none():
    # MFH's entries have no 'table' field
    key = "mfh.fig2.kd_gain_at_gamma_1"
    assert "table" not in paper_value(key)
    assert paper_entry(id=key, table=None)["id"] == key
    assert paper_entry(id=key, table=2) is None
    assert paper_entry(id=key, no_such_field=None)["id"] == key


@pytest.mark.parametrize("fields", [
    dict(table=3, dataset="avdigits", direction="a2v", method="kd", variant=None),  # embedded
    dict(table=1, dataset="cremad", direction="a2v", method="kd", variant=None),  # not in T1
    dict(table=3, dataset="ave", direction="a2v", method="c2kd", variant="half"),
    dict(table=3, dataset="ave", direction="t2i", method="kd", variant=None),
    dict(table=2, dataset="cremad"),  # Table 2 is on AVE and VGGSound only
    dict(id="no_such_id"),
])
def test_no_entry_is_none(fields):
    assert paper_entry(**fields) is None


def test_an_ambiguous_selection_raises_naming_the_ids():
    # Table 3 publishes C2KD twice per column (Ours-dagger and Ours-double-dagger)
    fields = dict(table=3, dataset="ave", direction="a2v", method="c2kd")
    with pytest.raises(ValueError) as err:
        paper_entry(**fields)
    msg = str(err.value)
    assert msg.startswith("2 published values match ")
    assert "c2kd_t3_ave_a2v_c2kd_partial" in msg and "c2kd_t3_ave_a2v_c2kd_full" in msg
    assert "'method': 'c2kd'" in msg  # it names the fields it was given


def test_a_large_ambiguous_selection_names_its_count_and_some_ids():
    t7 = [e for e in paper_values().values() if e.get("table") == 7]
    with pytest.raises(ValueError, match=rf"^{len(t7)} published values match") as err:
        paper_entry(table=7)
    named = re.findall(r"c2kd_t7_\w+", str(err.value))
    assert 1 <= len(named) <= 5 and set(named) <= {e["id"] for e in t7}
    with pytest.raises(ValueError, match="published values match {}"):
        paper_entry()  # no field selects every entry


def test_every_c2kd_entry_is_found_by_its_selection_fields():
    """Each published C2KD number is the one entry its selection fields name (so a notebook
    row that carries them finds exactly it)."""
    keys = ("table", "dataset", "direction", "method", "variant")
    for key, entry in paper_values().items():
        if entry["file"] != "c2kd.yaml":
            continue
        assert paper_entry(**{k: entry.get(k) for k in keys})["id"] == key


# ----------------------------------------------------------------------------- claims
NEW = {"artefact": "MFH Fig. 2", "claim": "KD's gain rises with gamma",
       "evidence": "slope +6.43 [+5.10, +7.76] points per unit gamma over 60 runs",
       "interval": "+6.43 [+5.10, +7.76] points per unit gamma", "verdict": "undecided"}
OLD = {"artefact": "C2KD Table 6", "claim": "C2KD beats the self-KD methods",
       "evidence": "avdigits Visual: C2KD - best self-KD = -0.33", "held": False}


def test_report_records_claims_with_their_interval_and_verdict(tmp_path, monkeypatch):
    from cmkd.reporting import STAGING_ENV, Report, write_report
    from cmkd.verdicts import CLAIM_COLUMNS

    # as under `cmkd reproduce`, with the staging folder standing in for the published one
    monkeypatch.setenv(STAGING_ENV, str(tmp_path / "reports/smoke"))
    report = Report("01_mvd_synthetic_sweeps", "smoke", "a title", root=tmp_path)
    shown = report.claims(pd.DataFrame([NEW]))
    assert list(shown.columns) == CLAIM_COLUMNS
    assert shown.iloc[0].to_dict() == NEW
    manifest = tmp_path / "reports/smoke/manifest/01_mvd_synthetic_sweeps.json"
    assert json.loads(manifest.read_text())["claims"] == [NEW]
    text = write_report("smoke", ["01_mvd_synthetic_sweeps"], root=tmp_path).read_text()
    assert "Qualitative claims (0 held, 0 NOT held, 1 undecided):" in text
    assert "*undecided* when it straddles" in text
    assert ("| MFH Fig. 2 | KD's gain rises with gamma | slope +6.43 [+5.10, +7.76] points per "
            "unit gamma over 60 runs | +6.43 [+5.10, +7.76] points per unit gamma | undecided |"
            ) in re.sub(r" +", " ", text)
    with pytest.raises(ValueError, match="unknown verdict"):
        report.claims(pd.DataFrame([dict(NEW, verdict="maybe")]))


def test_an_old_manifest_with_held_booleans_still_renders(tmp_path):
    from cmkd.reporting import claims_table, write_report

    old = dict(OLD, held=True, claim="an old claim that held")
    manifest = tmp_path / "reports/smoke/manifest/06_c2kd.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({
        "notebook": "06_c2kd", "title": "C2KD", "profile": "smoke",
        "source": "notebooks/06_c2kd.ipynb", "params": "params/smoke/06_c2kd.yaml",
        "figures": [], "tables": [], "comparisons": [], "claims": [OLD, old]}))
    text = re.sub(r" +", " ", write_report("smoke", ["06_c2kd"], root=tmp_path).read_text())
    assert "Qualitative claims (1 held, 1 NOT held, 0 undecided):" in text
    assert "| C2KD beats the self-KD methods | avdigits Visual: C2KD - best self-KD = -0.33 | " \
           "not recorded | NOT held |" in text
    assert "| an old claim that held |" in text and "not recorded | held |" in text
    table = claims_table([OLD])
    assert table.verdict.tolist() == ["NOT held"] and table.interval.tolist() == ["not recorded"]
    # an old record beside a new one (REPORT.md's scorecard gathers every notebook's claims)
    new = {"artefact": "a", "claim": "a new claim", "evidence": "e", "interval": "+1 [+0, +2]",
           "verdict": "undecided"}
    mixed = claims_table([OLD, new])
    assert mixed.verdict.tolist() == ["NOT held", "undecided"]
    assert mixed.interval.tolist() == ["not recorded", "+1 [+0, +2]"]


def test_smoke_reports_say_their_numbers_check_plumbing_only(tmp_path):
    from cmkd.reporting import write_report

    smoke = write_report("smoke", [], root=tmp_path).read_text()
    assert "**Smoke profile: these numbers check the plumbing only**" in smoke
    assert "plumbing only" not in write_report("default", [], root=tmp_path).read_text()
