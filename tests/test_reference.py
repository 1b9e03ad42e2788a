"""cmkd/reference/*.yaml: required fields, unique ids, plausible values, and C2KD spot values read
again from the paper's text (shared/papers/c2kd_cvpr2024.md), not from a second hand copy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cmkd.reporting import paper_values

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "lib" / "cmkd" / "reference"
REQUIRED = ("id", "artefact", "quantity", "value", "unit", "source")
C2KD_SELECT = ("table", "dataset", "direction", "method", "variant", "student", "teacher", "metric")
# the checkout's shared/ where there is one, else the one beside the worktrees
PAPER = next((p for p in (ROOT / "shared/papers/c2kd_cvpr2024.md",
                          ROOT.parent / "shared/papers/c2kd_cvpr2024.md") if p.is_file()), None)


def _entries(name: str) -> list[dict]:
    return yaml.safe_load((REFERENCE / name).read_text())


@pytest.fixture(scope="module")
def c2kd() -> list[dict]:
    return _entries("c2kd.yaml")


def test_every_reference_entry_has_the_required_fields():
    for path in sorted(REFERENCE.glob("*.yaml")):
        for entry in _entries(path.name):
            missing = [k for k in REQUIRED if k not in entry]
            assert not missing, f"{path.name}: {entry.get('id')!r} lacks {missing}"
            assert isinstance(entry["value"], (int, float)) and not isinstance(entry["value"], bool)


def test_ids_are_unique_across_reference_files():
    ids = [e["id"] for p in sorted(REFERENCE.glob("*.yaml")) for e in _entries(p.name)]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    assert len(paper_values()) == len(ids)  # the loader sees every entry (and refuses duplicates)


def test_c2kd_entries_are_selectable_and_named_by_the_scheme(c2kd):
    assert {e["table"] for e in c2kd} == {1, 2, 3, 4, 5, 6, 7}
    for e in c2kd:
        missing = [k for k in C2KD_SELECT if k not in e]
        assert not missing, f"{e['id']!r} lacks {missing}"
        parts = ["c2kd", f"t{e['table']}", e["dataset"], e["direction"], e["method"]]
        assert e["id"] == "_".join(parts + ([e["variant"]] if e["variant"] else []))
        assert e["artefact"] == f"C2KD Table {e['table']}"
        assert e["metric"] == ("miou" if e["table"] == 4 else "target_probability"
                               if e["variant"] == "proba" else "top1_acc")
    assert {(e["dataset"], e["direction"]) for e in c2kd} == {
        (d, x) for d in ("cremad", "ave", "vggsound") for x in ("a2v", "v2a")
    } | {("crisismmd", "t2i"), ("crisismmd", "i2t"), ("nyu", "d2rgb"), ("nyu", "rgb2d")}


def test_c2kd_values_are_percentages(c2kd):
    for e in c2kd:
        if e["metric"] == "target_probability":
            assert e["unit"] == "probability" and 0 <= e["value"] <= 1, e["id"]
            continue
        assert e["unit"] == "%"
        assert 0 <= e["value"] <= 100, e["id"]
        assert 0 <= e.get("std", 0) <= 100, e["id"]


def test_c2kd_table_sizes(c2kd):
    """Every printed cell: Table 3 lacks FitNet's and Review's CrisisMMD cells (empty / '-')."""
    count = {t: sum(e["table"] == t for e in c2kd) for t in (1, 2, 3, 4, 5, 6, 7)}
    assert count == {1: 9 * 4, 2: 10 * 4, 3: 12 * 8 - 4, 4: 8 * 6, 5: 7 * 6, 6: 5 * 6, 7: 5 * 8}


def test_c2kd_table2_printed_changes_agree_with_the_cells(c2kd):
    """Table 2 prints each cell and its change against another row: the two transcriptions
    (cell, change) must agree to the printed 0.1, and w/o KD's cells are Table 1's."""
    t2 = {e["id"]: e for e in c2kd if e["table"] == 2}
    for e in t2.values():
        if "change" not in e:
            continue
        base = t2["_".join(["c2kd", "t2", e["dataset"], e["direction"], e["change_from"]])]
        assert e["value"] - base["value"] == pytest.approx(e["change"], abs=0.051), e["id"]
    for e in c2kd:
        if e["table"] == 1 and e["method"] == "nokd":
            assert t2[e["id"].replace("_t1_", "_t2_")]["value"] == e["value"]


# ----------------------------------------------------------------------------- against the text
def _table_rows(text: str, number: int) -> list[list[str]]:
    """The tab-separated rows printed just above the caption 'Table <number>.', cells stripped of
    HTML tags and surrounding blanks."""
    lines = text.splitlines()
    caption = next(i for i, line in enumerate(lines) if line.startswith(f"Table {number}. "))
    rows: list[list[str]] = []
    for line in reversed(lines[:caption]):
        if "\t" not in line:
            if rows:
                break
            continue  # the blank lines between a table and its caption
        rows.append([re.sub(r"<[^>]+>", "", cell).strip() for cell in line.split("\t")])
    return rows[::-1]


def _cell(text: str, table: int, row: str, column: int) -> tuple[float, float | None]:
    """(mean, std or None) printed in `table`, the row whose first cell is `row`, the `column`-th
    cell after it (1-based)."""
    (cells,) = [r for r in _table_rows(text, table) if r[0] == row]
    m = re.fullmatch(r"(\d+\.\d+)\s*(?:±\s*(\d+\.\d+))?", cells[column])
    assert m, f"Table {table} row {row!r} cell {column}: {cells[column]!r}"
    return float(m[1]), (float(m[2]) if m[2] else None)


SPOTS = [  # id, table, printed row, cell after the row label
    ("c2kd_t1_ave_v2a_dist", 1, "DIST [17]", 2),  # 49.3 ± 0.52 (Table 3 prints ± 0.29)
    ("c2kd_t3_cremad_v2a_c2kd_full", 3, "Ours ‡", 2),
    ("c2kd_t4_nyu_rgb2d_cirkd_rgbmnv2_depthrn18", 4, "CIRKD [44]", 6),
    ("c2kd_t5_crisismmd_i2t_kd", 5, "(a)", 4 + 6),  # after the four module columns
    ("c2kd_t6_crisismmd_t2i_zipfkd", 6, "ZipfKD[26]", 5),
    ("c2kd_t7_vggsound_v2a_nkd_ogm_teacher", 7, "+OGM [30]", 8),
]


@pytest.fixture(scope="module")
def paper_text() -> str:
    if PAPER is None:
        pytest.skip("shared/papers/c2kd_cvpr2024.md is not in this checkout")
    return PAPER.read_text()


@pytest.mark.parametrize("key,table,row,column", SPOTS, ids=[s[0] for s in SPOTS])
def test_c2kd_spot_values_match_the_paper_text(paper_text, key, table, row, column):
    mean, std = _cell(paper_text, table, row, column)
    entry = paper_values()[key]
    assert entry["value"] == mean
    assert entry.get("std") == std


def test_c2kd_table5_switches_match_the_checkmarks(paper_text, c2kd):
    rows = _table_rows(paper_text, 5)
    data = [r for r in rows if re.fullmatch(r"\(\w\)|-", r[0])]
    methods = ["nokd", "kd", "c2kd_bd", "c2kd_noproxy", "c2kd_bd_nt", "c2kd_bd_ofs", "c2kd"]
    assert [r[0] for r in data] == ["(e)", "(a)", "(b)", "(c)", "-", "-", "(d)"]
    for cells, method in zip(data, methods):
        marked = dict(zip(("proxy", "ofs", "nt", "bd"), (bool(c) for c in cells[1:5])))
        entries = [e for e in c2kd if e["table"] == 5 and e["method"] == method]
        assert len(entries) == 6
        assert all(e["switches"] == marked for e in entries), method
        assert [float(c) for c in cells[5:11]] == [e["value"] for e in entries], method
