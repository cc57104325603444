"""Poison scanner files go to quarantine once, and the inbox keeps flowing.

Findings of issue 19: a far-future scan time raised OverflowError and blocked
the inbox; a FIFO in place of an image could hang the driver; a truncated
DICOS file was accepted with the hash of a partial image; processed/ and
quarantine/ replaced by symlinks carried scans out of the inbox; a non-UTF-8
name faulted the driver; a 251-character name failed its move on every poll;
a region of size Infinity was published as null.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from drivers.sim.xray import ScannerSim, dicos_bytes
from drivers.xray import _files
from drivers.xray.contract import EVENT_PAYLOADS
from drivers.xray.folder import XrayFolderDriver
from edge.testing.wait import wait_for
from tests._xray_helpers import XrayHarness, daemon_events

FAST = {"poll_s": 0.05, "settle_s": 0.05}


def _write(folder: Path, name: str | bytes, data: bytes) -> None:
    """Write-then-rename into ``folder`` (a name may be raw bytes: not UTF-8)."""
    tmp = os.path.join(os.fsencode(folder), b".incoming.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, os.path.join(os.fsencode(folder), os.fsencode(name)))


def test_poison_files_are_quarantined_once_and_good_files_behind_them_flow(tmp_path, edge_daemon, base_config):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sim = ScannerSim(dose_usv=1.0)
    poison = {
        "overflow.json": json.dumps(sim.record("clear", time="9999-12-31T23:59:59-01:00")).encode(),
        b"scan-\xff\xfe.json": json.dumps(sim.record("clear")).encode(),
        "infinite.json": json.dumps(sim.record("suspicious", regions=[
            {"x": 1, "y": 2, "w": float("inf"), "h": 3}])).encode(),  # json.dumps writes Infinity
        "nan-dose.json": json.dumps(sim.record("clear", dose_usv=float("nan"))).encode(),
    }
    for name, data in poison.items():
        _write(inbox, name, data)
    long_rec = sim.record("clear")
    _write(inbox, "a" * 246 + ".json", json.dumps(long_rec).encode())  # valid, with a 251-byte name
    os.mkfifo(inbox / "fifo.png")
    fifo_rec = sim.record("clear")
    _write(inbox, "with-fifo.json", json.dumps({**fifo_rec, "image": "fifo.png"}).encode())
    good = [sim.record("clear") for _ in range(3)]
    for rec in good:
        sim.write_json(inbox, rec)

    base_config["drivers"] = [{"name": "xr", "kind": "xray.folder", "path": str(inbox), "image_wait_s": 1.0,
                               **FAST}]
    daemon = edge_daemon(base_config)
    rejected = wait_for(lambda: len(r := daemon_events(daemon, "xray.rejected")) >= len(poison) and r, what="4 rejections")
    scans = wait_for(lambda: len(s := daemon_events(daemon, "xray.scan")) >= 5 and s, what="the 5 good scans")
    reasons = {e["payload"]["file"]: e["payload"]["reason"] for e in rejected}
    assert "out of range" in reasons["overflow.json"]
    assert "not valid UTF-8" in reasons["scan-\\udcff\\udcfe.json"]
    assert "finite" in reasons["infinite.json"] and "finite" in reasons["nan-dose.json"]
    ids = {e["payload"]["scan_id"] for e in scans}
    assert {r["scan_id"] for r in [*good, long_rec, fifo_rec]} == ids  # every good file, once
    assert next(e for e in scans if e["payload"]["scan_id"] == fifo_rec["scan_id"])["payload"]["image_missing"]
    for event in daemon_events(daemon):
        EVENT_PAYLOADS[event["type"]].model_validate(event["payload"])  # the contract holds

    wait_for(lambda: sorted(p.name for p in inbox.iterdir()) == ["fifo.png", "processed", "quarantine"],
             what="the inbox empty of results")
    assert any("~" in p.name for p in (inbox / "processed").iterdir())  # the long name, shortened
    status = json.loads(daemon.cli("status", "--json").stdout)["daemon"]["drivers"]["xr"]
    assert status["status"] == "ok" and status["restarts"] == 0  # never faulted
    time.sleep(0.3)  # several polls: nothing is refused twice
    assert len(daemon_events(daemon, "xray.rejected")) == len(poison)


def test_a_fifo_is_never_opened_for_reading(tmp_path):
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(_files.NotRegular):
        _files.open_regular(fifo)  # no writer: a blocking open would hang here forever
    assert time.monotonic() - started < 1
    (tmp_path / "real.png").write_bytes(b"png")
    f, size = _files.open_regular(tmp_path / "real.png")
    with f:
        assert size == 3 and f.read() == b"png"


@pytest.fixture
def harness(tmp_path):
    h = XrayHarness(tmp_path, limit_usv=10.0, warning_usv=4.0)
    yield h
    h.close()


def test_a_truncated_dicos_file_waits_then_is_refused(tmp_path, harness):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sim = ScannerSim(dose_usv=1.0)
    cut, late = sim.record("clear"), sim.record("clear")
    full_late = dicos_bytes(late, pixels=os.urandom(8000))
    _write(inbox, "cut.dcm", dicos_bytes(cut, pixels=os.urandom(8000))[:-3000])
    _write(inbox, "late.dcm", full_late[:-3000])  # its exporter is slow: the rest comes in time
    driver = harness.start_driver(XrayFolderDriver, path=inbox, incomplete_wait_s=1.5, **FAST)
    harness.wait_polls(driver, 5)
    assert harness.events("xray.scan") == [] and harness.events("xray.rejected") == []  # waiting, not taken
    _write(inbox, "late.dcm", full_late)
    scan = harness.wait(lambda: harness.events("xray.scan"), what="the completed file")[0]["payload"]
    assert scan["image"]["bytes"] == 8000  # the whole image, not the part first seen
    rejected = harness.wait(lambda: harness.events("xray.rejected"), what="the truncated file refused")
    assert rejected[0]["payload"]["file"] == "cut.dcm" and "truncated" in rejected[0]["payload"]["reason"]
    assert len(harness.events("xray.scan")) == 1


def test_output_folders_replaced_by_links_move_nothing_out_of_the_inbox(tmp_path, harness):
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    outside.mkdir()
    driver = harness.start_driver(XrayFolderDriver, path=inbox, **FAST)
    harness.wait_polls(driver)
    (inbox / "processed").rmdir()
    (inbox / "processed").symlink_to(outside)
    sim = ScannerSim(dose_usv=1.0)
    rec = sim.record("clear")
    sim.write_json(inbox, rec)
    harness.wait(lambda: harness.events("xray.scan"), what="the scan recorded")
    harness.wait(lambda: driver.health()["status"] == "degraded", what="degraded health")
    assert "symbolic link" in driver.health()["problem"]
    harness.wait_polls(driver, 5)
    assert list(outside.iterdir()) == [] and (inbox / f"{rec['scan_id']}.json").exists()

    (inbox / "processed").unlink()  # positive control: a real folder again, the file moves, once
    harness.wait(lambda: (inbox / "processed" / f"{rec['scan_id']}.json").exists(), what="the move")
    assert driver.health()["status"] == "ok" and len(harness.events("xray.scan")) == 1
