"""systemd/edge.service: hardened (exposure score), and the daemon speaks its protocol.

The score comes from ``systemd-analyze security --offline=true`` where it exists;
the sd_notify side (READY=1, WATCHDOG=1 pings at WatchdogSec/2, STOPPING=1) is
checked against a real ``edge run`` with a notify socket, as systemd would run it.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.testing.daemon import dump_toml

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "edge.service"
MAX_EXPOSURE = 2.0


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive in unit files
    parser.read(UNIT)
    return parser


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_exposure_score_is_at_most_2(record_property):
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
                          capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for edge\.service: (\d+\.\d+)", done.stdout)
    assert match, f"no score in systemd-analyze output:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    score = float(match.group(1))
    record_property("systemd_exposure", score)
    print(f"systemd-analyze security exposure: {score}")
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}:\n{done.stdout}"


def test_unit_runs_the_daemon_the_way_it_was_built_for():
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"].split()[0] == "/opt/edge/bin/edge"
    assert service["ExecStart"].split()[1:] == ["--config", "/etc/edge/edge.toml", "run"]
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "78"  # EX_CONFIG: no restart loop on a bad config
    assert int(service["WatchdogSec"]) >= 20  # the daemon pings every min(WatchdogSec/2, 10 s)
    assert service["User"] == "edge" and service["NoNewPrivileges"] == "yes"
    assert service["CapabilityBoundingSet"] == ""
    assert set(service["SupplementaryGroups"].split()) == {"dialout", "video"}
    assert service["StateDirectory"] == "edge" and service["ConfigurationDirectory"] == "edge"


def _credentials() -> list[tuple[str, str, str]]:
    """(directive, id, source) of every credential line (configparser keeps only the last of a key)."""
    out = []
    for line in UNIT.read_text().splitlines():
        directive, _, value = line.partition("=")
        if "Credential" in directive and not line.startswith("#"):
            cred_id, _, source = value.partition(":")
            out.append((directive, cred_id, source))
    return out


def test_every_key_is_loaded_as_an_encrypted_credential_that_may_be_absent():
    from edge import secrets

    creds = _credentials()
    # Exactly the keys the daemon reads: a key left out would silently stay a plain file.
    assert sorted(cred_id for _, cred_id, _ in creds) == sorted(secrets.NAMES)
    for directive, cred_id, source in creds:
        # Encrypted only: LoadCredential= would take a plaintext file, SetCredential= a fixed key.
        assert directive == "LoadCredentialEncrypted", directive
        # A relative source is searched in /etc/credstore.encrypted/ and skipped when absent; an
        # absolute path that is missing stops the unit (243/CREDENTIALS) on unprovisioned devices.
        assert source == f"edge.{cred_id}" and not source.startswith("/"), source
    assert "ImportCredential" not in UNIT.read_text()  # systemd 254+: ignored by Debian 12's 252


def _messages(sock: socket.socket, until, timeout: float) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while not until(got):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out; sd_notify messages so far: {got}")
        sock.settimeout(left)
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return got


def test_daemon_sends_ready_watchdog_pings_and_stopping(tmp_path, base_config):
    config = tmp_path / "edge.toml"
    config.write_text(dump_toml({**base_config, "drivers": [
        {"name": "hb", "kind": "sim.heartbeat", "rate": 5.0}]}))
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    # WatchdogSec=1 as systemd would pass it: a ping is due every 0.5 s.
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "edge", "--config", str(config), "run"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ready = _messages(sock, lambda got: "READY=1" in got, timeout=60)
        started = time.monotonic()
        pings = _messages(sock, lambda got: got.count("WATCHDOG=1") >= 6, timeout=30)
        took = time.monotonic() - started
        assert ready[-1] == "READY=1"
        # A ping every 0.5 s (a health change also wakes the loop and pings early): six
        # pings span at least three ticks, and a busy loop would send them at once.
        assert 1.0 <= took < 10.0, f"6 pings took {took:.2f} s"
        proc.send_signal(signal.SIGTERM)
        _messages(sock, lambda got: "STOPPING=1" in got, timeout=30)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    assert pings.count("WATCHDOG=1") >= 6
