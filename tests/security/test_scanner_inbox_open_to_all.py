"""Red team: a local account drops a forged clear scan into an inbox every account may write to.

A result file carries no signature, so the watch-folder adapter can only trust who may write
into its inbox. With the inbox world-writable the real daemon reads nothing, records why
(``system.driver_fault`` naming the folder and the chmod), and leaves the forged file
where it is; once the folder is closed to others the same file is read (positive control).
"""

from __future__ import annotations

import os

from drivers.sim.xray import ScannerSim
from edge.testing.wait import wait_for
from tests._xray_helpers import daemon_events


def test_a_world_writable_inbox_is_not_read_until_it_is_closed(tmp_path, edge_daemon, base_config):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.chmod(inbox, 0o1777)  # like /tmp: sticky, but anyone may create a file
    forged = ScannerSim(scanner="SIM-XR-1", subject="V-1").record("clear")
    ScannerSim(scanner="SIM-XR-1", subject="V-1").write_json(inbox, forged)
    base_config.update(xray={"limit_usv": 250.0, "warning_usv": 100.0},
                       supervisor={"backoff_initial_s": 0.2, "backoff_max_s": 0.5},
                       drivers=[{"name": "xr", "kind": "xray.folder", "path": str(inbox),
                                 "poll_s": 0.05, "settle_s": 0.05}])
    daemon = edge_daemon(base_config)
    faults = wait_for(lambda: [e for e in daemon_events(daemon, "system.driver_fault")
                               if e["payload"]["driver"] == "xr"], 20, "the driver's refusal")
    assert "the inbox is writable by every account (mode 1777)" in faults[0]["payload"]["error"]
    assert f"chmod o-w {inbox}" in faults[0]["payload"]["error"]
    assert daemon_events(daemon, "xray.scan") == []
    assert [p.name for p in inbox.iterdir() if p.is_file()] != []  # the forged file was not taken
    os.chmod(inbox, 0o750)  # positive control: closed to others, the next restart reads it
    scans = wait_for(lambda: daemon_events(daemon, "xray.scan"), 20, "the scan once the inbox is closed")
    assert [s["payload"]["scan_id"] for s in scans] == [forged["scan_id"]]
