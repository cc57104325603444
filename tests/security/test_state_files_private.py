"""Red team: another account on the device reads the event store of a daemon started by hand.

The systemd unit sets ``UMask=0077``; a field engineer who runs ``edge run`` from a shell
(umask 022) made ``events.db``, ``commands.db`` and ``status.json`` 0644 in a 0755
folder: any local account could read every movement through the gate. ``edge run`` now
tightens its own umask, and warns when the folder itself is open to others. The positive
control: the daemon still runs and records events, and the control socket keeps its
group mode (0660) for the operators' two-person flow.
"""

from __future__ import annotations

import json
import os
import stat

from edge.testing.wait import wait_for


def test_a_daemon_started_with_umask_022_makes_nothing_others_can_read(tmp_path, base_config, edge_daemon):
    base_config["drivers"] = [{"name": "hb", "kind": "sim.heartbeat", "rate": 20}]
    state = tmp_path / "open-state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)  # as a shell's mkdir leaves it
    base_config["state_dir"] = str(state)
    old = os.umask(0o022)  # the shell's umask, inherited by the daemon
    try:
        daemon = edge_daemon(base_config)
    finally:
        os.umask(old)
    wait_for(lambda: daemon.cli("events", "tail", "-n", "3", "--json").stdout.count('"seq"') >= 3, 20,
             "events recorded")  # positive control: the daemon works
    opened = {str(p.relative_to(state)): oct(p.lstat().st_mode & 0o777) for p in state.rglob("*")
              if p.name != "control.sock" and not stat.S_ISSOCK(p.lstat().st_mode) and p.lstat().st_mode & 0o077}
    assert not opened, f"readable by group or others: {opened}"
    assert stat.S_IMODE((state / "control.sock").stat().st_mode) == 0o660  # operators still reach it
    warnings = [json.loads(line) for line in daemon.log_path.read_text().splitlines()
                if "state_dir_open_to_others" in line]
    assert warnings and f"chmod 0710 {state}" in warnings[0]["detail"]
