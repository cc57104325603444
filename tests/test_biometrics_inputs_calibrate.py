"""``edge biometrics calibrate``: pair files as people write them, and honest counts.

The pairs CSV is written into tmp_path the ways a spreadsheet or a person
writes one (header or not, yes/No/TRUE/0, semicolons, a BOM, relative paths);
bad lines are reported with their line numbers before any photo is encoded;
a pair whose photo shows no usable face is a false reject, never an accept.
"""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from drivers.camera.calibrate import PairsError, read_pairs
from tests._face_helpers import IDENTITIES, frame, photo


@pytest.fixture
def cli(biometrics_cli):
    return biometrics_cli


def _rel(name: str, folder) -> str:
    """A shared photo's path relative to the CSV's folder (not to the current directory)."""
    return os.path.relpath(photo(name), folder)


def test_header_or_not_any_spelling_of_same_and_paths_relative_to_the_csv(tmp_path, monkeypatch):
    folder = tmp_path / "site" / "pairs"
    folder.mkdir(parents=True)
    values = ["yes", "No", "TRUE", "false", "1", "0", "Y", "n"]
    lines = [f"{_rel('obama_1', folder)},{_rel('obama_2', folder)},{v}" for v in values]
    expected = [v.lower() in ("yes", "true", "1", "y") for v in values]
    with_header = folder / "with_header.csv"
    with_header.write_text("file_x,file_y,same\n" + "\n".join(lines) + "\n")
    without = folder / "without.csv"
    without.write_text("\n".join(lines))
    monkeypatch.chdir(tmp_path)  # the current directory must not matter
    for csv_file in (with_header, without):
        rows = read_pairs(csv_file)
        assert [same for _, _, same in rows] == expected
        assert {p.resolve() for x, y, _ in rows for p in (x, y)} == {photo("obama_1").resolve(), photo("obama_2").resolve()}
        start = 2 if csv_file is with_header else 1
        assert [r.line for r in rows] == list(range(start, start + len(values)))


def test_what_spreadsheets_write_bom_semicolons_quotes_blank_lines_comments_trailing_columns(tmp_path):
    f = tmp_path / "export.csv"
    f.write_text("\ufeff# pairs for gate north\n"
                 "Photo A;Photo B;Same person\n"
                 "\n"
                 f'"{photo("obama_1")}";"{photo("obama_3")}";Yes;;\n'
                 f"{photo('obama_1')} ; {photo('biden_1')} ; no\n", encoding="utf-8")
    rows = read_pairs(f)
    assert [(x.name, y.name, same, r.line) for r in rows for x, y, same in [r]] == [
        ("obama_1.jpg", "obama_3.jpg", True, 4), ("obama_1.jpg", "biden_1.jpg", False, 5)]


def test_every_bad_line_is_named_with_its_number(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo\n")
    f = tmp_path / "pairs.csv"
    f.write_text("file_x,file_y,same\n"
                 f"{photo('obama_1')},{photo('obama_2')},yes\n"      # 2: fine
                 f"{photo('obama_1')},gone.jpg,yes\n"                # 3: missing photo
                 f"{photo('obama_1')},{photo('biden_1')},maybe\n"    # 4: unknown value
                 f"{photo('obama_1')},{photo('biden_1')}\n"          # 5: two columns
                 f"{photo('obama_1')},notes.jpg,no\n"                # 6: a text file named .jpg
                 f"{photo('obama_1')},{photo('obama_1')},yes\n"      # 7: the same photo twice
                 f"{photo('obama_1')},{tmp_path},no\n")              # 8: a folder
    with pytest.raises(PairsError) as caught:
        read_pairs(f)
    problems = dict(caught.value.problems)
    assert sorted(problems) == [3, 4, 5, 6, 7, 8]
    assert "gone.jpg not found" in problems[3] and str(tmp_path) in problems[3]
    assert "'maybe'" in problems[4] and "yes/no" in problems[4]
    assert "expected 3 columns" in problems[5]
    assert "notes.jpg: is a text file" in problems[6]
    assert "same file" in problems[7]
    assert "folder" in problems[8]
    assert all(line.startswith(f"{f} line ") for line in caught.value.lines)


def test_the_cli_prints_one_line_per_problem_and_json_lists_them(cli, tmp_path):
    f = tmp_path / "pairs.csv"
    f.write_text(f"{photo('obama_1')},missing.jpg,yes\n{photo('obama_1')},{photo('biden_1')},perhaps\n")
    r = cli("calibrate", f)
    assert r.exit_code == 1
    errors = r.stderr.strip().splitlines()
    assert errors[0].startswith(f"error: {f} line 1: image ") and "missing.jpg not found" in errors[0]
    assert errors[1].startswith(f"error: {f} line 2: same is 'perhaps'")
    assert errors[-1] == f"error: {f}: fix the line(s) above and run again"
    r = cli("calibrate", f, "--json")
    out = json.loads(r.stdout)
    assert r.exit_code == 1 and out["ok"] is False
    assert [e["line"] for e in out["errors"]] == [1, 2]
    assert cli("calibrate", tmp_path / "nope.csv").exit_code == 2  # click: the CSV itself must exist


def test_a_pair_without_a_usable_face_is_a_false_reject_never_an_accept(cli, tmp_path):
    blank = tmp_path / "blank.jpg"  # a photo of a wall: no face at all
    rng = np.random.default_rng(2)
    cv2.imwrite(str(blank), cv2.GaussianBlur(rng.integers(0, 256, (600, 800, 3), dtype=np.uint8), (0, 0), 3))
    cut = tmp_path / "tiny.png"  # the face far too small to decide on
    cv2.imwrite(str(cut), cv2.resize(frame("obama_1"), None, fx=0.1, fy=0.1, interpolation=cv2.INTER_AREA))
    f = tmp_path / "pairs.csv"
    lines = [f"{photo(f'{i}_1')},{photo(f'{i}_2')},yes" for i in IDENTITIES]
    lines += [f"{photo(f'{a}_1')},{photo(f'{b}_2')},no" for a, b in zip(IDENTITIES, IDENTITIES[1:], strict=False)]
    lines += [f"{photo('obama_1')},{blank},yes",   # genuine claimed, nothing to compare: a false reject
              f"{cut},{photo('obama_2')},yes",      # the same
              f"{photo('biden_1')},{blank},no"]     # impostor with no face: never an accept
    f.write_text("\n".join(lines) + "\n")
    r = cli("calibrate", f, "--target-far", "0.01", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["genuine_pairs"], out["genuine_compared"]) == (7, 5)
    assert (out["impostor_pairs"], out["impostor_compared"]) == (5, 4)
    assert out["failed_to_acquire"]["genuine_pairs"] == 2 and out["failed_to_acquire"]["impostor_pairs"] == 1
    failed = {p["image"]: p["status"] for p in out["failed_to_acquire"]["photos"]}
    assert set(failed) == {str(blank), str(cut)} and set(failed.values()) <= {"empty", "no_face", "quality_low"}
    assert [(p["line"], p["counted_as"]) for p in out["not_compared"]] == [
        (10, "false_reject"), (11, "false_reject"), (12, "not_counted")]
    at = {row["threshold"]: row for row in out["table"]}
    # Every one of the 5 comparable genuine pairs matches at 0.5; the 2 without a face do not.
    assert at[0.5]["frr"] == round(2 / 7, 5) and at[0.7]["frr"] == round(2 / 7, 5) == out["frr_floor"]
    # The decisions alone: no mismatch at 0.5; at 0.30 the pairs over that distance, out of 5, not 7.
    assert at[0.5]["fnmr"] == 0.0 and out["fta_rate_genuine"] == round(2 / 7, 5)
    assert round(at[0.3]["fnmr"] * 5) == round(at[0.3]["frr"] * 7) - 2
    assert at[0.5]["far"] == 0.0 and at[0.7]["far"] <= 1.0  # over the 4 impostor pairs compared
    assert any("count as false rejects" in n for n in out["notes"])
    assert any("never counted as accepts" in n for n in out["notes"])

    r = cli("calibrate", f, "--target-far", "0.01")
    assert r.exit_code == 0
    assert "photos the gate cannot use: 2" in r.stdout and f"{blank}: {failed[str(blank)]} (" in r.stdout
