"""Red team: an old clear scan, and a scan result forged on the scanner's stream port.

The gate refuses a result taken 10 minutes ago (``scan_stale``) and the person
is held; a fresh clear scan lets the next visitor through (positive control).
Setting the clock back does not make an old clear scan fresh: its age is judged
by the device's time floor, as commands and key expiry are.
The stream adapter refuses lines without the scanner's HMAC, or with a MAC
under another secret, as alarms; the authentic line is counted.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner

from drivers.sim.turnstile import TurnstileSim
from drivers.sim.xray import LineServer, ScannerSim
from edge.cli import cli
from tests._gate_helpers import VISITOR, enroll, lane_config, last_seq, show, wait_event


def _present(daemon, booking: str, subject: str) -> int:
    mark = last_seq(daemon.state_dir)
    out = CliRunner().invoke(cli, ["--config", str(daemon.config_path), "gate", "present", "lane1",
                                   "--booking", booking, "--subject", subject, "--json"])
    assert out.exit_code == 0, out.output
    return mark


def _scan_at(tmp_path, subject: str, taken: datetime) -> dict:
    sim = ScannerSim(scanner="SIM-XR-1", subject=subject)
    rec = sim.record("clear", time=taken.isoformat().replace("+00:00", "Z"))
    sim.write_json(tmp_path / "scanner", rec)
    return rec


def test_a_ten_minute_old_clear_scan_does_not_open_the_gate(tmp_path, edge_daemon, base_config):
    sim = TurnstileSim("rs485-bus", tmp_path / "tty-lane1", baudrate=115200, auto_pass=True).start()
    try:
        base_config.update(**lane_config(tmp_path, sim, xray_timeout_s=20))
        enroll(base_config["state_dir"])
        show(tmp_path, VISITOR)
        daemon = edge_daemon(base_config)
        mark = _present(daemon, "BK-1", "V-1")
        wait_event(daemon.state_dir, "gate.dose_check", after=mark, what="the dose check")
        _scan_at(tmp_path, "V-1", datetime.now(UTC) - timedelta(minutes=10))
        held = wait_event(daemon.state_dir, "gate.decision", after=mark, what="the decision")
        assert (held["payload"]["outcome"], held["payload"]["reason"]) == ("hold", "scan_stale"), held
        assert "600s ago" in held["payload"]["detail"] or "ago" in held["payload"]["detail"]
        deny = CliRunner().invoke(cli, ["--config", str(daemon.config_path), "gate", "override", "lane1",
                                        "--deny", "--dir", "in", "--reason", "rescan", "--json"])
        assert deny.exit_code == 0, deny.output
        # Positive control: the same visitor, scanned now, passes.
        mark = _present(daemon, "BK-2", "V-1")
        wait_event(daemon.state_dir, "gate.dose_check", after=mark, what="the dose check")
        _scan_at(tmp_path, "V-1", datetime.now(UTC))
        ok = wait_event(daemon.state_dir, "gate.decision", after=mark, what="the grant")
        assert ok["payload"]["outcome"] == "grant", ok
    finally:
        sim.stop()


def test_a_clock_set_back_does_not_make_an_old_clear_scan_fresh(tmp_path, edge_daemon, base_config):
    from edge.commands.seen import SeenIds

    sim = TurnstileSim("rs485-bus", tmp_path / "tty-lane1", baudrate=115200, auto_pass=True).start()
    try:
        base_config.update(**lane_config(tmp_path, sim, xray_timeout_s=20))
        enroll(base_config["state_dir"], visit_s=3 * 3600)  # the visit goes on past the real time
        show(tmp_path, VISITOR)
        daemon = edge_daemon(base_config, start=False)
        # The device has already seen the real time, an hour after what its wall clock now
        # says (set back by a rogue NTP answer or a dead RTC): its time floor is an hour ahead.
        real_now = datetime.now(UTC) + timedelta(hours=1)
        SeenIds(daemon.state_dir, clock=real_now.timestamp).close()
        daemon.start()
        mark = _present(daemon, "BK-1", "V-1")
        wait_event(daemon.state_dir, "gate.dose_check", after=mark, what="the dose check")
        # The scanner's clear result from an hour ago: by the wall clock it was taken just now.
        _scan_at(tmp_path, "V-1", datetime.now(UTC))
        held = wait_event(daemon.state_dir, "gate.decision", after=mark, what="the decision")
        assert (held["payload"]["outcome"], held["payload"]["reason"]) == ("hold", "scan_stale"), held
        assert "refused (gate.scan_freshness_s)" in held["payload"]["detail"], held
        wait_event(daemon.state_dir, "system.clock_jumped_back", what="the clock-back alarm")
        deny = CliRunner().invoke(cli, ["--config", str(daemon.config_path), "gate", "override", "lane1",
                                        "--deny", "--dir", "in", "--reason", "rescan", "--json"])
        assert deny.exit_code == 0, deny.output
        # Positive control: a scan taken at the real time counts, though the wall clock calls it future.
        mark = _present(daemon, "BK-2", "V-1")
        wait_event(daemon.state_dir, "gate.dose_check", after=mark, what="the dose check")
        _scan_at(tmp_path, "V-1", real_now)
        ok = wait_event(daemon.state_dir, "gate.decision", after=mark, what="the grant")
        assert ok["payload"]["outcome"] == "grant", ok
    finally:
        sim.stop()


def test_forged_stream_results_are_refused(tmp_path, edge_daemon, base_config):
    secret_file = tmp_path / "scanner1.secret"
    secret_file.write_bytes(os.urandom(32).hex().encode())
    os.chmod(secret_file, 0o600)
    server, sim = LineServer(), ScannerSim(subject="V-9")
    try:
        base_config["drivers"] = [{"name": "xr-line", "kind": "xray.stream", "url": server.url,
                                   "reconnect_min_s": 0.1, "secret_file": str(secret_file)}]
        daemon = edge_daemon(base_config)
        wait_event(daemon.state_dir, "xray.stream_state", what="the stream connected")
        server.wait_client()
        forged, guessed, real = (sim.record("clear") for _ in range(3))
        server.send(sim.line_json(forged))  # no MAC at all
        server.send(sim.signed(b"not-the-scanner-secret-0123456789abcdef", sim.line_json(guessed)))
        server.send(sim.signed(secret_file.read_bytes().strip(), sim.line_json(real)))
        scan = wait_event(daemon.state_dir, "xray.scan", what="the authentic scan")
        assert scan["payload"]["scan_id"] == real["scan_id"]
        rejected = [e for e in _events(daemon.state_dir, "xray.rejected")]
        assert len(rejected) == 2 and all(e["priority"] == "alarm" for e in rejected)
        assert "no 'hmac-sha256=<hex> ' prefix" in rejected[0]["payload"]["reason"]
        assert "does not match" in rejected[1]["payload"]["reason"]
        assert {e["payload"]["scan_id"] for e in _events(daemon.state_dir, "xray.scan")} == {real["scan_id"]}
    finally:
        server.close()


def test_stream_without_a_secret_is_a_config_error(tmp_path, edge_daemon, base_config):
    base_config["drivers"] = [{"name": "xr-line", "kind": "xray.stream", "url": "socket://127.0.0.1:9"}]
    run = edge_daemon(base_config, start=False).cli("run")
    assert run.returncode == 78 and "secret_file" in run.stderr


def _events(state_dir, glob):
    from tests._gate_helpers import events

    return [e for e in events(state_dir, glob)]


