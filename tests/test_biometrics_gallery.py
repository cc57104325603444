"""The gallery at rest and the ``edge biometrics`` CLI, on real files and real photos."""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from drivers.camera.gallery import Gallery, GalleryError, Subject
from edge.testing.daemon import dump_toml
from tests._face_helpers import IDENTITIES, photo, template


def _plain_forms(raw: bytes) -> list[bytes]:
    """Ways a template could sit on disk unencrypted: float32 LE/BE, float64, a slice of each."""
    values = struct.unpack("<128f", raw)
    f64 = struct.pack("<128d", *values)
    be = struct.pack(">128f", *values)
    return [raw, raw[64:96], be[64:96], f64[128:176]]


def test_template_bytes_are_nowhere_in_plain_form_under_state_dir(tmp_path):
    state = tmp_path / "state"
    g = Gallery(state)
    for name in IDENTITIES:
        g.upsert(Subject(name, "staff", [template(f"{name}_1")]))
    g.revoke("biden")  # secure_delete: a revoked template is overwritten too
    assert len(g.subjects()) == 4  # they are there and decrypt
    files = [p for p in state.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"gallery.db", "gallery.key"}
    for name in IDENTITIES:
        for form in _plain_forms(template(f"{name}_1")):
            for p in files:
                assert form not in p.read_bytes(), f"{name}'s template found in plain form in {p.name}"
    g.close()
    for p in files:  # also after the WAL is checkpointed into the main file
        if p.exists():
            for form in _plain_forms(template("obama_1")):
                assert form not in p.read_bytes()


def test_key_file_is_private_and_a_readable_key_is_refused(tmp_path):
    g = Gallery(tmp_path / "s")
    key = tmp_path / "s" / "secrets" / "gallery.key"  # apart from the gallery it protects
    assert key.stat().st_mode & 0o777 == 0o600 and not (tmp_path / "s" / "biometrics" / "gallery.key").exists()
    assert (tmp_path / "s" / "biometrics").stat().st_mode & 0o077 == 0
    g.close()
    os.chmod(key, 0o644)
    with pytest.raises(GalleryError, match="chmod 600"):
        Gallery(tmp_path / "s")


def test_a_template_moved_to_another_subject_or_under_another_key_does_not_open(tmp_path):
    import sqlite3

    g = Gallery(tmp_path / "s")
    g.upsert(Subject("a", "staff", [template("obama_1")]))
    g.upsert(Subject("b", "staff", [template("biden_1")]))
    g.close()
    db = sqlite3.connect(tmp_path / "s" / "biometrics" / "gallery.db")
    db.execute("UPDATE templates SET sealed = (SELECT sealed FROM templates WHERE subject_id = 'a') "
               "WHERE subject_id = 'b'")
    db.commit()
    db.close()
    with pytest.raises(GalleryError, match="does not decrypt"):
        Gallery(tmp_path / "s").subjects()


def test_bad_templates_are_refused_with_the_reason():
    with pytest.raises(GalleryError, match="512 bytes"):
        Subject("x", "staff", [b"\0" * 100]).validate()
    with pytest.raises(GalleryError, match="NaN"):
        Subject("x", "staff", [np.full(128, np.nan, "<f4").tobytes()]).validate()
    with pytest.raises(GalleryError, match="role"):
        Subject("x", "guard", [template("obama_1")]).validate()
    with pytest.raises(GalleryError, match="visitor needs valid_until"):
        Subject("x", "visitor", [template("obama_1")]).validate()


# -- the CLI, as a field engineer runs it (a real process, the device's config) -------------------

@pytest.fixture
def cli(biometrics_cli):
    return biometrics_cli


def test_cli_runs_as_a_real_process_too(tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text(dump_toml({"device_id": "gate-1", "site": "site-1", "role": "gate",
                                 "state_dir": str(tmp_path / "state")}))
    r = subprocess.run([sys.executable, "-m", "edge", "--config", str(config), "biometrics", "gallery"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no gallery" in r.stderr and "enroll" in r.stderr


def test_cli_enroll_verify_identify_gallery(cli, tmp_path):
    r = cli("enroll", "--reason", "test", "--subject", "obama", "--role", "visitor", "--valid-until",
            "2099-01-01T00:00Z", str(photo("obama_1")), str(photo("obama_3")), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["templates"] == 2
    r = cli("enroll", "--reason", "test", "--subject", "v-1", "--role", "visitor", "--valid-until", "2000-01-01T00:00Z",
            str(photo("biden_1")), "--json")
    assert r.returncode == 0, r.stderr
    r = cli("verify", "--subject", "obama", "--booking", "BK-1", str(photo("obama-720p")), "--json")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["ok"] and out["results"][0]["decision"] == "biometric.verified"
    assert out["results"][0]["booking_id"] == "BK-1"
    r = cli("verify", "--subject", "obama", str(photo("biden_2")))
    assert r.returncode == 1 and "verify_failed (no_match)" in r.stdout
    # 1:N is against staff only; a staff face comes from central or from two operators through the
    # daemon (tests/security/test_staff_enrolment_two_person.py), so it is written here directly.
    g = Gallery(tmp_path / "state")
    g.upsert(Subject("S-1", "staff", [template("obama_1")]), source="central")
    g.close()
    r = cli("identify", str(photo("obama_2")), str(photo("two_people")), str(photo("rose_leslie_2")), "--json")
    rows = json.loads(r.stdout)["results"]
    assert [x["decision"] for x in rows] == ["biometric.identified", "biometric.multiple_faces",
                                             "biometric.unknown"]
    assert {"detect", "encode", "search"} <= set(rows[0]["timings_ms"]) and rows[0]["subject_id"] == "S-1"
    r = cli("gallery", "--json")
    stats = json.loads(r.stdout)
    assert stats["staff"] == 1 and stats["templates"] == 3 and stats["visitors"] == 1  # v-1 expired: purged
    assert "templates" not in r.stdout.replace('"templates": 3', "")


def test_cli_staff_enrollment_is_never_written_by_one_operator(cli, tmp_path):
    """A staff face is a standing pass: the CLI never writes one itself. Without the daemon (which
    holds it for a second operator) nothing is enrolled; the request through a running daemon is
    tests/security/test_staff_enrolment_two_person.py."""
    r = cli("enroll", "--reason", "test", "--subject", "S-1", "--role", "staff", str(photo("obama_1")), "--json")
    assert r.returncode == 69, r.stdout + r.stderr
    error = json.loads(r.stdout)["error"]
    assert error.startswith("nothing enrolled: a staff enrolment goes through the running daemon") and \
        "no control socket" in error
    assert not (tmp_path / "state" / "biometrics" / "gallery.db").exists()
    r = cli("enroll", "--reason", "test", "--subject", "S-1", "--role", "staff", "--operator", "bob",
            str(photo("obama_1")))
    assert r.returncode == 2 and "--operator is for a visitor" in r.stderr


def test_cli_refuses_to_enroll_a_bad_photo_with_a_readable_reason(cli):
    r = cli("enroll", "--reason", "test", "--subject", "x", "--role", "staff", str(photo("two_people")))
    assert r.returncode == 1 and "exactly one face" in r.stderr
    r = cli("enroll", "--reason", "test", "--subject", "x", "--role", "staff", "--valid-from", "tomorrow", str(photo("obama_1")))
    assert r.returncode == 2 and "ISO 8601" in r.stderr
    r = cli("enroll", "--reason", "test", "--subject", "x", "--role", "visitor", str(photo("obama_1")))
    assert r.returncode == 2 and "--valid-until" in r.stderr


def test_cli_calibrate_reports_far_frr_and_a_threshold(cli, tmp_path):
    pairs = tmp_path / "pairs.csv"
    with open(pairs, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_x", "file_y", "same"])
        for name in IDENTITIES:
            w.writerow([photo(f"{name}_1"), photo(f"{name}_2"), "yes"])
        for a, b in zip(IDENTITIES, IDENTITIES[1:], strict=False):
            w.writerow([photo(f"{a}_1"), photo(f"{b}_2"), "no"])
    started = time.monotonic()
    r = cli("calibrate", str(pairs), "--target-far", "0.01", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["genuine_pairs"], out["impostor_pairs"]) == (5, 4)
    at = {row["threshold"]: row for row in out["table"]}
    assert at[0.5]["far"] == 0.0 and at[0.5]["frr"] == 0.0 and at[0.3]["frr"] > 0
    assert out["recommended_threshold"] == 0.5 and any("impostor pairs" in n for n in out["notes"])
    assert time.monotonic() - started < 60


def test_processes_starting_together_agree_on_one_key(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    folder = tmp_path / "k" / "secrets"
    with ctx.Pool(4) as pool:
        keys = pool.map(_key_of, [str(tmp_path / "k")] * 8)
    assert len(set(keys)) == 1 and len(keys[0]) == 32
    assert [p.name for p in folder.iterdir()] == ["gallery.key"]  # no temporary file left


def _key_of(path: str) -> bytes:
    from pathlib import Path

    from drivers.camera.gallery import load_or_create_key

    return load_or_create_key(Path(path))


@pytest.fixture
def operator_kept_out(tmp_path, monkeypatch):
    """The gallery as the daemon leaves it (biometrics/ 0700, its files 0600, owned by the daemon's
    account, here ``nobody``), seen by an operator's account in group edge: the kernel refuses
    it. (The tests run as root, which the kernel lets in everywhere, so its verdict is played by
    os.access and by the stat that the refused account gets; every check calls them.)"""
    import pwd
    from pathlib import Path

    state = tmp_path / "state"
    Gallery(state).close()
    daemon = pwd.getpwuid(65534).pw_name
    for path in (state / "biometrics", *(state / "biometrics").iterdir(), state / "secrets",
                 *(state / "secrets").iterdir()):
        os.chown(path, 65534, -1)
    closed = {state / "biometrics", state / "secrets"}
    real_access, real_stat = os.access, Path.stat

    def access(path, mode, *a, **k):
        return Path(path) not in closed and Path(path).parent not in closed and real_access(path, mode, *a, **k)

    def stat(self, *a, **k):  # what Path.exists() and is_dir() meet in a folder that cannot be searched
        if self.parent in closed:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *a, **k)
    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os.path, "lexists", lambda p: Path(p).parent not in closed and os.path.exists(p))
    monkeypatch.setattr(Path, "stat", stat)
    return state, daemon


def test_an_operator_the_gallery_keeps_out_is_told_whose_account_to_use(cli, operator_kept_out):
    """`edge biometrics gallery` and a visitor's `enroll` crashed on a PermissionError traceback
    (biometrics/ is the daemon's, 0700) or failed on sqlite's 'attempt to write a readonly
    database'. They now name the folder, its owner and mode, and the account to run as."""
    state, daemon = operator_kept_out
    folder = f"{state}/biometrics (owner {daemon}, group root, mode 0700)"
    advice = f"lets only {daemon} in: run this as {daemon} (sudo -u {daemon} ...) or as root"
    r = cli("gallery")
    assert r.returncode == 1 and r.stderr.startswith(f"error: cannot open the face gallery {state}/biometrics/gallery.db: {folder} "
                               f"{advice}; "), r.stderr
    assert "daemon's account" in r.stderr
    r = cli("enroll", "--reason", "central down", "--subject", "v-1", "--role", "visitor", "--valid-until",
            "2099-01-01T00:00Z", str(photo("obama_1")), "--json")
    assert r.returncode == 1 and f"{folder} {advice}" in json.loads(r.stdout)["error"], r.stdout


def test_a_gallery_file_the_operator_may_only_read_is_named_not_a_readonly_database(cli, tmp_path, monkeypatch):
    """biometrics/ opened to the group and gallery.db readable by it: sqlite opened the file and
    then failed with 'attempt to write a readonly database'. The file and its owner are named."""
    state = tmp_path / "state"
    Gallery(state).close()
    db = state / "biometrics" / "gallery.db"
    os.chmod(db, 0o640)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: not (str(p) == str(db) and mode & os.W_OK)
                        and real_access(p, mode, *a, **k))
    r = cli("gallery", "--json")
    error = json.loads(r.stdout)["error"]
    assert r.returncode == 1 and error.startswith(f"cannot open the face gallery {db}: {db} (owner root, "
                                                  "group root, mode 0640) lets only root in"), error
    monkeypatch.setattr(os, "access", real_access)  # positive control: the daemon's account reads it
    r = cli("gallery", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["subjects"] == 0, r.stdout


def test_a_key_in_the_daemons_secrets_folder_names_the_folder_and_account(operator_kept_out):
    """Beyond the gallery, its key: secrets/ is the daemon's alone (0700). A PermissionError
    from the key's stat became a traceback; it is now the folder, owner and account."""
    from edge import secrets
    from edge._fs import KeyFileError

    state, daemon = operator_kept_out
    with pytest.raises(KeyFileError) as refused:
        secrets.key(state, "gallery.key")
    assert str(refused.value).startswith(f"cannot read the key {state}/secrets/gallery.key: {state}/secrets "
                                         f"(owner {daemon}, group root, mode 0700) lets only {daemon} in: run "
                                         f"this as {daemon} (sudo -u {daemon} ...) or as root"), refused.value
