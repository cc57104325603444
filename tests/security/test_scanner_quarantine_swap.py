"""Red team: the scanner's account swaps quarantine/ for a folder of its own, with a link planted in it.

The scanner's export account may write the inbox, so it may rename the daemon's
quarantine/ away and make its own in its place. The daemon wrote each quarantine note
through a fixed temporary name with a plain open(), which follows a link: planted under
that name, the link made the daemon overwrite any file its account can write (the event
store, its keys) with a JSON note. The real daemon now moves nothing into a folder
another account owns, writes notes only as new files (never through a link), and
quarantines into the folder it makes again once the foreign one is gone.
"""

from __future__ import annotations

import json
import os
import shutil

from drivers.sim.xray import ScannerSim
from edge.testing.wait import wait_for
from tests._xray_helpers import daemon_events

SCANNER_UID = 65534  # the export account of the scanner ("nobody" here)
POISON = "poison.json"


def _xr_health(daemon) -> dict:
    return json.loads(daemon.cli("status", "--json").stdout)["daemon"]["drivers"]["xr"]


def test_a_foreign_quarantine_folder_with_a_planted_link_is_not_written(tmp_path, edge_daemon, base_config):
    inbox = tmp_path / "inbox"
    inbox.mkdir(mode=0o770)
    os.chown(inbox, -1, SCANNER_UID)  # group-writable by the scanner's account, as in the install guide
    victim = tmp_path / "events-of-the-daemon.db"
    victim.write_bytes(b"evidence the daemon keeps")
    base_config["drivers"] = [{"name": "xr", "kind": "xray.folder", "path": str(inbox),
                               "poll_s": 0.05, "settle_s": 0.05}]
    daemon = edge_daemon(base_config)
    quarantine = inbox / "quarantine"
    wait_for(quarantine.is_dir, 20, "the daemon's quarantine folder")

    # the scanner's account: the daemon's folder renamed away, its own in place, a link inside
    quarantine.rename(inbox / "old-quarantine")
    quarantine.mkdir()
    for name in (f".{POISON}.reason.json.tmp", f"{POISON}.reason.json"):
        (quarantine / name).symlink_to(victim)
    os.chown(quarantine, SCANNER_UID, SCANNER_UID)
    (inbox / POISON).write_bytes(b"{not json")

    health = wait_for(lambda: (h := _xr_health(daemon)).get("problem") and h, 20, "the foreign folder refused")
    assert f"belongs to uid {SCANNER_UID}" in health["problem"] and health["status"] == "degraded"
    assert victim.read_bytes() == b"evidence the daemon keeps"
    assert (inbox / POISON).exists() and not (quarantine / POISON).exists()  # nothing moved into it

    shutil.rmtree(quarantine)  # positive control: the foreign folder removed, the daemon makes its own again
    rejected = wait_for(lambda: daemon_events(daemon, "xray.rejected"), 20, "the poison file quarantined")
    assert rejected[0]["payload"]["file"] == POISON
    note = json.loads((quarantine / f"{POISON}.reason.json").read_text())
    assert note["file"] == POISON and (quarantine / POISON).exists()
    assert quarantine.stat().st_uid == os.geteuid()
    assert victim.read_bytes() == b"evidence the daemon keeps"
    wait_for(lambda: _xr_health(daemon)["status"] == "ok", 10, "healthy again")
    sim = ScannerSim(dose_usv=1.0)
    sim.write_json(inbox, sim.record("clear"))  # and a good scan still flows
    wait_for(lambda: daemon_events(daemon, "xray.scan"), 20, "the good scan")
