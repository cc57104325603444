"""The simulator's scenario language, the driver's config checks, and commands racing the poll loop."""

from __future__ import annotations

import threading

import pytest
from pydantic import ValidationError

from drivers.sim import turnstile_scenario as scen
from drivers.turnstile.driver import TurnstileConfig
from edge.config import DriverEntry, driver_config
from tests._turnstile_helpers import Lane


def test_scenario_steps_parse_with_addresses_and_defaults():
    steps = scen.parse("passage in 3; forced out @2\n# a comment\nunplug\nwait 0.5; emergency on")
    assert [(s.name, s.args, s.address) for s in steps] == [
        ("passage", ("in", 3), 1), ("forced", ("out",), 2), ("unplug", (), 1), ("wait", (0.5,), 1),
        ("emergency", (1,), 1)]


@pytest.mark.parametrize("text, message", [
    ("passage sideways", "'sideways' is not in|out"),
    ("fly", "unknown step 'fly'"),
    ("wait", "'wait' takes seconds; got nothing"),
    ("noise -3", "'-3' is not a whole number"),
    ("tamper maybe", "is not on|off"),
])
def test_scenario_errors_say_what_was_expected(text, message):
    with pytest.raises(ValueError, match=message):
        scen.parse(text)


def test_scenario_plays_against_a_driver(tmp_path):
    lane = Lane("bcc-p2p", tmp_path).start()
    try:
        lane.online()
        steps = scen.parse("passage in 2; tailgate in; noise 20; unplug 0.3; passage out; wrong_way out")
        scen.run(lane.sim, steps, threading.Event())
        lane.wait("turnstile.offline")
        lane.wait("turnstile.wrong_way")
        assert [p["payload"]["direction"] for p in lane.wait("turnstile.passage", count=3)] == ["in", "in", "out"]
        assert lane.wait("turnstile.tailgate")[0]["priority"] == "alarm"
    finally:
        lane.stop()


def test_config_errors_name_the_key():
    entry = DriverEntry(name="lane1", kind="turnstile.serial", codec="bcc-p2p", port="/dev/ttyS0",
                        addresses=[1, 2])
    with pytest.raises(ValidationError, match="point to point"):
        driver_config(entry)
    with pytest.raises(ValidationError, match="codec"):
        TurnstileConfig(name="x", kind="turnstile.serial", codec="modbus", port="/dev/ttyS0")
    with pytest.raises(ValidationError, match="1..32"):
        TurnstileConfig(name="x", kind="turnstile.serial", codec="rs485-bus", port="p", addresses=[0, 40])


@pytest.mark.parametrize("codec", ["rs485-bus", "bcc-p2p"])
def test_commands_from_many_threads_while_events_stream(codec, tmp_path):
    """The supervisor's command thread, the gate policy and tests may all call handle() at once."""
    lane = Lane(codec, tmp_path).start()
    try:
        lane.online()
        errors, done = [], []

        def worker(n):
            try:
                for i in range(8):
                    name = ("unlock", "lock", "read_counters", "ping")[(n + i) % 4]
                    done.append(lane.driver.handle(name, {})["command"])
            except Exception as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for _ in range(30):
            lane.sim.passage("in")
        for t in threads:
            t.join(30)
        assert not errors and len(done) == 32
        assert [p["payload"]["counter"] for p in lane.wait("turnstile.passage", count=30)] == list(range(1, 31))
    finally:
        lane.stop()


@pytest.mark.parametrize("codec", ["rs485-bus", "bcc-p2p"])
def test_state_file_carries_counters_across_a_daemon_restart(codec, tmp_path):
    state = tmp_path / "state" / "lane1.json"
    lane = Lane(codec, tmp_path, state_file=state).start()
    try:
        lane.online()
        lane.sim.passage("in", count=2)
        lane.wait("turnstile.passage", count=2)
        lane.stop_driver()
        assert '"counters": {"in": 2, "out": 0}' in state.read_text()
        lane.sim.passage("out", count=3)       # the edge is down (update, reboot, power cut)...
        lane.sim.devices[1].queue.clear()      # ...and the controller's queue did not keep them
        lane.restart_driver()
        (gap,) = lane.wait("turnstile.counter_gap")
        assert gap["payload"]["delta"] == 3 and gap["payload"]["direction"] == "out"
        assert gap["payload"]["reason"] == "missed_while_offline"
        lane.sim.passage("in")
        counters = [p["payload"]["counter"] for p in lane.wait("turnstile.passage", count=3)]
        assert counters == [1, 2, 3]           # nothing repeated after the restart
    finally:
        lane.stop()


def test_a_corrupt_state_file_is_set_aside_and_the_lane_still_works(tmp_path):
    state = tmp_path / "lane1.json"
    state.write_text("{not json")
    lane = Lane("bcc-p2p", tmp_path, state_file=state).start()
    try:
        lane.online()
        assert [p.name.startswith("lane1.json.bad-") for p in tmp_path.iterdir() if "bad" in p.name] == [True]
        lane.sim.passage("in")
        lane.wait("turnstile.passage")
        assert lane.driver.handle("ping", {})["ok"]
    finally:
        lane.stop()


@pytest.mark.parametrize("argv, message", [
    (["--scenario", "passage in; passage up"], "--scenario: step 2: 'passage': 'up' is not in|out"),
    (["--addresses", "1,x"], "--addresses '1,x': expected bus addresses 1..32"),
    (["--addresses", "40"], "expected bus addresses 1..32"),
])
def test_sim_cli_rejects_bad_input_with_exit_2(argv, message):
    from click.testing import CliRunner

    from edge.cli import cli

    result = CliRunner().invoke(cli, ["sim", "turnstile", "--codec", "rs485-bus", *argv])
    assert result.exit_code == 2 and message in result.output


def test_sim_help_steps_works_as_every_error_message_writes_it():
    """`edge sim turnstile --help-steps`, with no --codec, as the errors and the docs say."""
    from click.testing import CliRunner

    from drivers.sim import turnstile_scenario as scen
    from edge.cli import cli

    result = CliRunner().invoke(cli, ["sim", "turnstile", "--help-steps"])
    assert result.exit_code == 0, result.output
    assert result.output == scen.__doc__ + "\n"


def test_simulator_keeps_running_when_nobody_reads_the_port(tmp_path):
    """Hours of retransmitted events with no driver attached must not wedge the simulator."""
    from drivers.sim.turnstile import TurnstileSim

    sim = TurnstileSim("bcc-p2p", tmp_path / "tty", pace=False, retransmit_s=0.0).start()
    try:
        sim.passage("in")   # retransmitted on every tick, nobody acknowledges
        for _ in range(256):  # far more than a pty buffers; a blocking write would hang right here
            sim.noise(4096)
            if sim.lost_bytes:
                break
        assert sim.lost_bytes > 0 and sim._thread.is_alive()
    finally:
        sim.stop()


def test_turnstile_status_explains_what_to_check(tmp_path):
    import json
    import os

    from click.testing import CliRunner

    from edge.cli import cli

    state = tmp_path / "state"
    state.mkdir()
    (state / "status.json").write_text(json.dumps({"running": True, "pid": os.getpid(), "updated_at": "now",
        "drivers": {"lane1": {
            "kind": "turnstile.serial", "status": "degraded", "restarts": 0, "port": "/dev/ttyUSB0",
            "codec": "rs485-bus", "baudrate": 9600, "retries": 4, "reconnects": 1,
            "line": {"frames": 200, "garbage_bytes": 90, "bad_checksum": 30, "malformed": 5, "unknown": 0},
            "devices": {"1": {"online": True, "counters": {"in": 5, "out": 2}, "mode": "locked", "rtt_ms": 21.0,
                              "emergency": True},
                        "2": {"online": False, "offline_reason": "no reply from address 2"}}}}}))
    config = tmp_path / "edge.toml"
    config.write_text(f'device_id = "d"\nsite = "s"\nrole = "gate"\nstate_dir = "{state}"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "turnstile", "status", "lane1"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "address 1: online, mode locked, in 5 / out 2" in out
    assert "address 2: OFFLINE" in out
    assert "controller at address 2 does not answer (no reply from address 2)" in out
    assert "fire-alarm free swing active" in out and "termination" in out
    as_json = CliRunner().invoke(cli, ["--config", str(config), "turnstile", "status", "lane1", "--json"])
    assert len(json.loads(as_json.output)["advice"]) == 3
    missing = CliRunner().invoke(cli, ["--config", str(config), "turnstile", "status", "lane9"])
    assert missing.exit_code == 1 and "no driver named 'lane9'" in missing.output


def test_turnstile_status_of_a_stopped_daemon_and_of_another_kind(tmp_path):
    """After `systemctl stop edge` the status file keeps each driver's kind and 'stopped' only:
    say the daemon is what to start (not "? on ? at ? baud"), and refuse a driver that is no
    turnstile, as every other `edge turnstile` command does."""
    import json

    from click.testing import CliRunner

    from edge.cli import cli

    state = tmp_path / "state"
    state.mkdir()
    (state / "status.json").write_text(json.dumps({
        "running": False, "pid": 0, "updated_at": "2026-01-01T00:00:00+00:00",
        "drivers": {"lane1": {"kind": "turnstile.serial", "status": "stopped", "restarts": 0},
                    "hb": {"kind": "sim.heartbeat", "status": "stopped", "restarts": 0}}}))
    config = tmp_path / "edge.toml"
    config.write_text(f'device_id = "d"\nsite = "s"\nrole = "gate"\nstate_dir = "{state}"\n')

    def status(*args):
        return CliRunner().invoke(cli, ["--config", str(config), "turnstile", "status", *args])

    result = status("lane1")
    assert result.exit_code == 0, result.output
    first, *checks = result.output.splitlines()
    assert first.startswith("lane1: stopped, as of 2026-01-01") and "?" not in first
    assert "the daemon is NOT running" in first
    assert checks == ["  check: the daemon is not running: start it (systemctl start edge); if it stopped "
                      "by itself, `journalctl -u edge` says why"]
    other = status("hb", "--json")
    assert other.exit_code == 1
    assert json.loads(other.output) == {"ok": False,
                                        "error": "driver 'hb' is a sim.heartbeat, not a turnstile "
                                                 "(turnstile.serial or turnstile.modbus); `edge cmd local hb "
                                                 "NAME` sends it a command of its own"}
