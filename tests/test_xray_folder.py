"""Watch-folder adapter in process: real files, real store, real service; every bad file quarantined."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from drivers.sim.xray import MALFORMED, ScannerSim
from drivers.xray.folder import XrayFolderDriver
from services.xray import check_subject
from tests._xray_helpers import XrayHarness

FAST = {"poll_s": 0.05, "settle_s": 0.05}


@pytest.fixture
def harness(tmp_path):
    h = XrayHarness(tmp_path, limit_usv=10.0, warning_usv=4.0)
    yield h
    h.close()


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


def test_every_bad_file_is_quarantined_with_a_reason_and_no_good_scan_is_lost(tmp_path, harness):
    inbox = tmp_path / "inbox"
    sim = ScannerSim(dose_usv=1.0)
    good = [sim.record("clear"), sim.record("suspicious"), sim.record("override"), sim.record("clear")]
    sim.write_json(inbox, good[0])
    bad = {kind: sim.write_malformed(inbox, kind) for kind in MALFORMED}
    bad["unsupported"] = inbox / "notes.bin"
    bad["unsupported"].write_bytes(b"\x00\x01")
    (inbox / "link.json").symlink_to("/etc/hostname")
    bad["symlink"] = inbox / "link.json"
    sim.write_json(inbox, good[1], image=b"\x89PNG" + os.urandom(2000))
    sim.write_xml(inbox, good[2])
    sim.write_dicos(inbox, good[3], pixels=os.urandom(4096))
    before = _rchar()
    driver = harness.start_driver(XrayFolderDriver, path=inbox, **FAST)
    harness.wait(lambda: len(harness.events("xray.scan")) == 4 and len(harness.events("xray.rejected")) == len(bad),
                 what="4 scans and every rejection")
    assert _rchar() - before < 50 * 1024 * 1024  # the 2 GB sparse file was refused by size, unread

    scans = {e["payload"]["scan_id"]: e["payload"] for e in harness.events("xray.scan")}
    assert {g["scan_id"] for g in good[:3]} < set(scans)  # the DICOS one is named by its SOP Instance UID
    assert {s["format"] for s in scans.values()} == {"json", "xml", "dicos"}
    with_image = scans[good[1]["scan_id"]]
    assert with_image["image"]["bytes"] == 2004 and with_image["outcome"] == "suspicious"
    assert scans[good[2]["scan_id"]]["override"] is True

    quarantine = inbox / "quarantine"
    expected = {"truncated_json": "invalid JSON", "wrong_schema": "wrong schema", "xml_bomb": "billion-laughs",
                "xxe": "XXE", "sparse_2gb": "2147483648 bytes is over the 1048576-byte limit for json files; not read",
                "garbage": "not UTF-8", "dicos_missing": "lacks required attribute(s): OperatorsName, EntranceDoseInmGy",
                "unsupported": "unsupported file type '.bin'", "symlink": "symbolic links are not accepted"}
    for kind, path in bad.items():
        note = json.loads((quarantine / (path.name + ".reason.json")).read_text())
        assert expected[kind] in note["reason"], (kind, note)
        assert (quarantine / path.name).exists() or (quarantine / path.name).is_symlink()
    harness.wait(lambda: sorted(p.name for p in inbox.iterdir()) == ["processed", "quarantine"],
                 what="the last file to be moved after its emit")
    assert len(list((inbox / "processed").iterdir())) == 5  # 4 results + 1 image
    assert driver.counts["quarantined"] == len(bad) and harness.drivers[0][1].is_alive()


def test_a_file_still_being_written_is_not_taken_until_the_writer_closes_it(tmp_path, harness):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rec = ScannerSim().record("suspicious")
    text = json.dumps(rec).encode()
    driver = harness.start_driver(XrayFolderDriver, path=inbox, **FAST)
    with open(inbox / "live.json", "wb") as writer:  # a scanner that writes in place, slowly
        writer.write(text[:40])
        writer.flush()
        harness.wait(lambda: driver.counts["busy"] >= 3, what="the driver to see the open writer")
        assert harness.events() == [] and (inbox / "live.json").exists()
        writer.write(text[40:])
    harness.wait(lambda: harness.events("xray.scan"), what="the finished file")
    assert harness.events("xray.scan")[0]["payload"]["scan_id"] == rec["scan_id"]
    assert harness.events("xray.rejected") == []


def test_temp_names_wait_for_rename_and_images_may_come_late(tmp_path, harness):
    inbox = tmp_path / "inbox"
    sim = ScannerSim()
    rec = sim.record("clear")
    inbox.mkdir()
    (inbox / f".{rec['scan_id']}.json.tmp").write_text("{half")
    driver = harness.start_driver(XrayFolderDriver, path=inbox, **FAST)
    harness.wait_polls(driver)
    assert harness.events() == []
    doc = {**rec, "image": "late.png"}
    (inbox / "r.json").write_text(json.dumps(doc))
    harness.wait_polls(driver, 4)
    assert harness.events() == []  # waiting for its image (image_wait_s)
    (inbox / "late.png").write_bytes(b"img" * 10)
    harness.wait(lambda: harness.events("xray.scan"), what="scan with late image")
    assert harness.events("xray.scan")[0]["payload"]["image"]["bytes"] == 30
    assert (inbox / f".{rec['scan_id']}.json.tmp").exists()  # never touched


def test_a_scan_whose_file_cannot_be_moved_is_emitted_once(tmp_path, harness):
    inbox = tmp_path / "inbox"
    driver = harness.start_driver(XrayFolderDriver, path=inbox, **FAST)
    harness.wait_polls(driver)
    (inbox / "processed").rmdir()
    (inbox / "processed").write_text("not a directory")  # every move fails (even as root)
    sim = ScannerSim(dose_usv=5.0)
    rec = sim.record("clear")
    sim.write_json(inbox, rec)
    harness.wait(lambda: driver.counts["duplicates"] >= 3, what="retries of the stuck file")
    assert len(harness.events("xray.scan")) == 1
    (inbox / "processed").unlink()
    harness.wait(lambda: (inbox / "processed" / f"{rec['scan_id']}.json").exists(), what="the move")
    assert len(harness.events("xray.scan")) == 1
    harness.wait(lambda: harness.events("xray.dose_warning"), what="dose warning (5 > 4)")
    assert harness.service.ledger.total("A1234BC") == 5.0
    decision = check_subject(harness.settings, "A1234BC", harness.service)  # what the gate policy asks (limit 10)
    assert decision.allowed and decision.warning and decision.remaining_usv == 5.0
    sim.write_json(inbox, sim.record("clear"))
    harness.wait(lambda: harness.events("xray.dose_limit"), what="limit reached at the 2nd scan")
    assert check_subject(harness.settings, "A1234BC", harness.service).allowed is False


def test_a_scanner_with_a_reset_clock_is_reported_and_its_dose_still_counts(tmp_path, harness):
    inbox = tmp_path / "inbox"
    sim = ScannerSim(dose_usv=2.0)
    sim.write_xml(inbox, sim.record("clear", time="1970-01-01T00:00:05Z"))
    harness.start_driver(XrayFolderDriver, path=inbox, **FAST)
    event = harness.wait(lambda: harness.events("xray.scanner_clock"), what="clock warning")[0]
    assert event["payload"]["scan_time"].startswith("1970") and event["priority"] == "normal"
    assert check_subject(harness.settings, "A1234BC", harness.service).total_usv == 2.0


def test_a_damaged_ledger_is_set_aside_rebuilt_from_the_store_and_reported(tmp_path):
    first = XrayHarness(tmp_path)
    inbox = tmp_path / "inbox"
    ScannerSim(dose_usv=3.0).write_json(inbox, ScannerSim(dose_usv=3.0).record("clear"))
    first.start_driver(XrayFolderDriver, path=inbox, **FAST)
    first.wait(lambda: first.events("xray.scan"), what="a scan")
    first.close()
    ledger = tmp_path / "state" / "xray.db"
    ledger.write_bytes(b"\x00garbage, not sqlite" * 100)  # a disk fault

    second = XrayHarness(tmp_path)
    try:
        event = second.wait(lambda: second.events("xray.ledger_recovered"), what="recovery alarm")[0]
        assert event["priority"] == "alarm" and event["payload"]["rebuilt_scans"] == 1
        assert Path(event["payload"]["moved_to"]).read_bytes().startswith(b"\x00garbage")
        assert check_subject(second.settings, "A1234BC", second.service).total_usv == 3.0  # rebuilt from the store
    finally:
        second.close()


def test_a_reused_scan_id_with_other_content_is_quarantined_not_dropped(tmp_path, harness):
    inbox, sim = tmp_path / "inbox", ScannerSim(dose_usv=1.0)
    rec = sim.record("clear")
    sim.write_json(inbox, rec)
    driver = harness.start_driver(XrayFolderDriver, path=inbox, **FAST)
    harness.wait(lambda: harness.events("xray.scan"), what="the first scan")
    (inbox / "again.json").write_text(json.dumps({**rec, "dose_usv": 4.0}))
    rejected = harness.wait(lambda: harness.events("xray.rejected"), what="the conflicting file")
    assert "already recorded with different content" in rejected[0]["payload"]["reason"]
    assert (inbox / "quarantine" / "again.json").exists() and len(harness.events("xray.scan")) == 1
    assert driver.counts["duplicates"] == 0
