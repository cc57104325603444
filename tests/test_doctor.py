"""`edge doctor` against real brokers: good, stopped, wrong CA, refusing credentials; and local checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from edge.config import Settings
from edge.doctor.local import check_devices
from edge.testing import dump_toml


def doctor(tmp_path, config: dict, *args: str) -> tuple[int, dict]:
    path = tmp_path / "doctor.toml"
    path.write_text(dump_toml(config))
    proc = subprocess.run([sys.executable, "-m", "edge", "--config", str(path), "doctor", "--json", *args],
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout)


def broker_steps(report: dict) -> dict[str, dict]:
    return {c["step"]: c for c in report["checks"] if c["check"] == "broker"}


def test_good_broker_and_running_daemon(tmp_path, mosquitto, edge_daemon, base_config):
    base_config["mqtt"] = {"brokers": [mosquitto.uri]}
    daemon = edge_daemon(base_config)
    code, report = doctor(tmp_path, daemon.config, "--skip", "clock")  # this CI host has no NTP
    assert code == 0 and report["ok"], report
    steps = broker_steps(report)
    assert list(steps) == ["dns", "tcp", "mqtt"]  # the daemon's own connection answers for the broker
    assert "the running daemon is connected as client dev-1" in steps["mqtt"]["detail"]
    names = {c["check"] for c in report["checks"]}
    assert names == {"config", "store", "audit", "disk", "trust", "packages", "broker", "devices", "components"}
    # Text form: one line per check, and the daemon kept its own session meanwhile.
    path = tmp_path / "doctor.toml"
    text = subprocess.run([sys.executable, "-m", "edge", "--config", str(path), "doctor", "--only", "broker"],
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and text.stdout.count("\nok  ") + text.stdout.startswith("ok  ") == 3


def test_stopped_broker_fails_at_tcp(tmp_path, mosquitto, base_config):
    base_config["mqtt"] = {"brokers": [mosquitto.uri]}
    mosquitto.stop()
    code, report = doctor(tmp_path, base_config, "--only", "broker")
    steps = broker_steps(report)
    assert code == 1 and steps["dns"]["ok"] and not steps["tcp"]["ok"]
    assert "refused" in steps["tcp"]["detail"] and "broker running" in steps["tcp"]["hint"]
    assert "mqtt" not in steps  # later layers are not tried once one fails


def tls_config(base_config, broker, pki, ca) -> dict:
    device = pki["devices"]["dev-1"]
    return {**base_config, "mqtt": {"brokers": [broker.uri], "ca_file": ca, "cert_file": device["cert"],
                                    "key_file": device["key"]}}


@pytest.fixture
def tls_broker(mosquitto_factory, tls_material):
    return mosquitto_factory(tls={"ca": tls_material["ca"], **tls_material["server"]})


def test_tls_broker_reports_certificate_expiry(tmp_path, tls_broker, tls_material, base_config):
    code, report = doctor(tmp_path, tls_config(base_config, tls_broker, tls_material, tls_material["ca"]),
                          "--only", "broker")
    steps = broker_steps(report)
    assert code == 0, report
    assert list(steps) == ["dns", "tcp", "tls", "mqtt", "roundtrip"]
    assert "certificate broker expires" in steps["tls"]["detail"] and "days" in steps["tls"]["detail"]


def test_wrong_ca_fails_at_tls(tmp_path, tls_broker, tls_material, base_config):
    code, report = doctor(tmp_path, tls_config(base_config, tls_broker, tls_material, tls_material["rogue_ca"]),
                          "--only", "broker")
    steps = broker_steps(report)
    assert code == 1 and steps["tcp"]["ok"] and not steps["tls"]["ok"]
    assert "certificate rejected" in steps["tls"]["detail"] and "ca_file" in steps["tls"]["hint"]


def test_refused_credentials_fail_at_mqtt(tmp_path, mosquitto_factory, base_config):
    broker = mosquitto_factory(allow_anonymous=False)
    base_config["mqtt"] = {"brokers": [broker.uri]}
    code, report = doctor(tmp_path, base_config, "--only", "broker")
    steps = broker_steps(report)
    assert code == 1 and steps["tcp"]["ok"] and not steps["mqtt"]["ok"]
    assert "CONNACK refused" in steps["mqtt"]["detail"] and "credentials" in steps["mqtt"]["hint"]


def test_invalid_config_is_a_failing_check(tmp_path, base_config):
    code, report = doctor(tmp_path, {**base_config, "store": {"max_bytes": "lots"}})
    assert code == 1 and report["checks"][0]["check"] == "config" and not report["checks"][0]["ok"]
    assert "store.max_bytes" in report["checks"][0]["detail"]


def test_serial_ports_and_cameras_present_and_openable(tmp_path, base_config):
    master, slave = os.openpty()
    video = tmp_path / "recording.mp4"
    video.write_bytes(b"\x00" * 16)
    video.chmod(0o444)
    try:
        settings = Settings(**{**base_config, "drivers": [
            {"name": "lane1", "kind": "x", "port": os.ttyname(slave)},
            {"name": "lane2", "kind": "x", "port": str(tmp_path / "ttyUSB9")},
            {"name": "cam", "kind": "x", "device": str(tmp_path)},
            {"name": "remote", "kind": "x", "port": "socket://10.0.0.9:4001"},
            {"name": "face", "kind": "x", "source": str(video)},
            {"name": "rtsp", "kind": "x", "source": "rtsp://10.0.0.8/stream"},
        ]})
        checks = {c.target: c for c in check_devices(settings)}
    finally:
        os.close(master)
        os.close(slave)
    assert checks["lane1.port"].ok and "character device" in checks["lane1.port"].detail
    assert not checks["lane2.port"].ok and "does not exist" in checks["lane2.port"].detail
    assert checks["cam.device"].ok and checks["remote.port"].ok and checks["rtsp.source"].ok
    assert checks["face.source"].ok and "(file)" in checks["face.source"].detail


@pytest.fixture
def port_refused_to_this_account(tmp_path, base_config, monkeypatch):
    """A serial port (a pty, group ``users``, 0660) and an operator's account (``nobody``) running
    doctor, which the kernel refuses it; the daemon's account is ``daemon`` (uid 1), which owns the
    state folder as systemd makes it for the unit's User=. (Root, which the tests run as, opens
    everything: the refusal is played by os.open, who runs doctor by os.geteuid.)"""
    import grp

    import edge.doctor.local as local

    master, slave = os.openpty()
    port = os.ttyname(slave)
    users = grp.getgrnam("users").gr_gid
    os.chown(port, 0, users)
    os.chmod(port, 0o660)
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 1, 1)
    settings = Settings(**{**base_config, "state_dir": str(state),
                           "drivers": [{"name": "lane1", "kind": "x", "port": port}]})
    monkeypatch.setattr(local, "_unit_groups", set)  # this host has no edge unit installed

    def run_by(uid: int) -> None:
        real_open = os.open
        monkeypatch.setattr(os, "open", lambda p, *a, **k: (_ for _ in ()).throw(PermissionError(13, "denied", p))
                            if str(p) == port else real_open(p, *a, **k))
        monkeypatch.setattr(os, "geteuid", lambda: uid)
    yield settings, port, run_by
    os.close(master)
    os.close(slave)


def test_doctor_run_by_an_operator_does_not_blame_the_daemon_for_its_own_refusal(port_refused_to_this_account):
    """Run as an operator on a port they cannot open, doctor said to add the *daemon's* user to
    the device's group: about the wrong account. It now judges the daemon's account (the lane's
    access) and names the operator's refusal apart; the fix names the group and the user."""
    settings, port, run_by = port_refused_to_this_account
    run_by(65534)
    [check] = check_devices(settings)
    facts = f"{port} (owner root, group users, mode 0660)"
    assert not check.ok and check.detail == (
        f"{facts}: the daemon's account daemon may not open it (not running: by its groups and the unit's "
        "SupplementaryGroups); nor may nobody, who ran this check"), check.detail
    assert check.hint.startswith("add daemon to group users: usermod -aG users daemon, or SupplementaryGroups=users")
    os.chown(port, 0, 1)  # positive control: the port's group is the daemon's own: the lane is fine
    [check] = check_devices(settings)
    assert check.ok and check.detail == (
        f"{port} (owner root, group daemon, mode 0660): the daemon's account daemon may open it (not running: by "
        "its groups and the unit's SupplementaryGroups); nobody, who ran this check, may not, which the service "
        "does not need"), check.detail


def test_doctor_run_as_the_daemons_account_tells_it_to_join_the_group(port_refused_to_this_account):
    settings, port, run_by = port_refused_to_this_account
    run_by(1)
    [check] = check_devices(settings)
    assert not check.ok and check.detail == (f"{port} (owner root, group users, mode 0660): the daemon's "
                                             "account, daemon, may not open it"), check.detail
    assert "usermod -aG users daemon" in check.hint


def test_doctor_judges_a_running_daemon_by_its_own_credentials(port_refused_to_this_account, edge_daemon,
                                                               base_config):
    """With the daemon running, its account and groups are the process's own (/proc/PID/status,
    its pid from the control socket), not a guess from the state folder's owner."""
    _, port, run_by = port_refused_to_this_account
    daemon = edge_daemon({**base_config, "drivers": [{"name": "hb", "kind": "sim.heartbeat", "rate": 1.0}]})
    run_by(65534)
    settings = Settings(**{**base_config, "state_dir": str(daemon.state_dir),
                           "drivers": [{"name": "lane1", "kind": "x", "port": port}]})
    [check] = check_devices(settings)
    pid = json.loads((daemon.state_dir / "status.json").read_text())["pid"]
    assert check.ok and f"the daemon's account root may open it (the running daemon, pid {pid}); nobody, " \
        "who ran this check, may not" in check.detail, check.detail


def test_doctor_never_takes_over_the_running_daemons_session(tmp_path, mosquitto_factory, tls_material,
                                                            edge_daemon, base_config):
    """On a broker that binds the client id to the certificate (the shipped brokers'
    `use_username_as_clientid`), a doctor probe with the device's certificate would get the daemon's
    id whatever it asked for and throw the daemon off (a clean start wipes its session too). While
    the daemon is connected there, its own connection is the answer; stopped, the probe runs."""
    from edge.testing.wait import wait_for

    broker = mosquitto_factory(tls={"ca": tls_material["ca"], **tls_material["server"]}, allow_anonymous=False,
                               extra="use_username_as_clientid true")
    config = tls_config(base_config, broker, tls_material, tls_material["ca"])
    daemon = edge_daemon(config)

    def link() -> dict:
        status = json.loads((daemon.state_dir / "status.json").read_text())
        return status["components"]["mqtt"]
    wait_for(lambda: link().get("connected"), 20, "the daemon connected over mTLS")
    connects = link()["connects"]
    code, report = doctor(tmp_path, daemon.config, "--only", "broker")
    time.sleep(1.5)  # a takeover would show as a disconnect and a reconnect by now
    assert link()["connected"] and link()["connects"] == connects, link()
    steps = broker_steps(report)
    assert code == 0 and list(steps) == ["dns", "tcp", "tls", "mqtt"], report
    assert "the running daemon is connected" in steps["mqtt"]["detail"], steps["mqtt"]

    daemon.stop()  # positive control: with nothing connected, the doctor's own probe runs
    code, report = doctor(tmp_path, daemon.config, "--only", "broker")
    steps = broker_steps(report)
    assert code == 0 and list(steps) == ["dns", "tcp", "tls", "mqtt", "roundtrip"], report
    assert "CONNACK accepted" in steps["mqtt"]["detail"]
