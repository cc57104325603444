"""The turnstile through the whole daemon: signed MQTT command, CLI on site, standalone simulator."""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
import serial

from drivers.sim.turnstile import TurnstileSim
from drivers.turnstile import messages as m
from drivers.turnstile.codecs import get_codec
from edge.commands.build import build_command
from edge.commands.publish import publish_command
from edge.signing import generate_keypair, load_private_key
from tests._trust_helpers import SECOND_OPERATOR_CONFIG, approve

SITE, DEVICE = "site-1", "dev-1"


def _cli(daemon, *args):
    """The CLI in-process (no interpreter start per call) against the running daemon's config."""
    from click.testing import CliRunner

    from edge.cli import cli

    result = CliRunner().invoke(cli, ["--config", str(daemon.config_path), *args])
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


def _lane(path, codec):
    return {"name": "lane1", "kind": "turnstile.serial", "codec": codec, "port": str(path),
            "baudrate": 115200, "reconnect_max_s": 0.5}


@pytest.mark.parametrize("codec", ["rs485-bus", "bcc-p2p"])
def test_signed_grant_over_mqtt_opens_the_lane_and_the_passage_follows(
        codec, tmp_path, mosquitto, mqtt_collector, edge_daemon, base_config):
    key, pub, _ = generate_keypair(tmp_path / "keys", "central")
    key2, pub2, _ = generate_keypair(tmp_path / "keys", "central-2")  # grant is a barrier command: two people
    sim = TurnstileSim(codec, tmp_path / "tty-lane1", baudrate=115200, auto_pass=True).start()
    try:
        base_config.update(mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
                           trust={"central_keys": [str(pub), str(pub2)]}, drivers=[_lane(sim.path, codec)])
        events = mqtt_collector(mosquitto, [f"edge/v1/{SITE}/{DEVICE}/events/turnstile"])
        edge_daemon(base_config)
        events.wait_for(lambda c: any(e["type"] == "turnstile.online" for e in c.events()), 20, "lane online")
        doc = build_command(target="lane1", name="grant", args={"direction": "in", "passes": 1},
                            ttl_s=60, device=DEVICE, site=SITE, keys=[load_private_key(key), load_private_key(key2)])
        publish_command(mosquitto.uri, SITE, DEVICE, doc)

        def got_both(c):
            types = [e["type"] for e in c.events()]
            return "turnstile.granted" in types and "turnstile.passage" in types
        events.wait_for(got_both, 20, "granted and passage")
        seen = [e for e in events.events() if e["type"] in ("turnstile.granted", "turnstile.passage")]
        assert [e["type"] for e in seen] == ["turnstile.granted", "turnstile.passage"]
        assert seen[0]["seq"] < seen[1]["seq"]
        assert seen[1]["payload"]["direction"] == "in" and seen[1]["payload"]["counter"] == 1
        assert sim.received(m.Grant) == [m.Grant("in", 1, 10)]
    finally:
        sim.stop()


def test_engineer_cli_grant_counters_and_driver_test(tmp_path, edge_daemon, base_config):
    sim = TurnstileSim("rs485-bus", tmp_path / "tty-lane1", baudrate=115200).start()
    try:
        base_config["drivers"] = [_lane(sim.path, "rs485-bus")]
        base_config["commands"] = SECOND_OPERATOR_CONFIG
        daemon = edge_daemon(base_config)
        sim.wait_for(lambda: sim.received(m.ReadCounters), 20)  # the driver has made contact

        out = _cli(daemon, "turnstile", "grant", "lane1", "--dir", "out", "--passes", "2", "--json",
                         "--reason", "visitor escort")
        held = json.loads(out.stdout)["result"]  # a grant waits for a second operator
        assert out.returncode == 1 and held["reason"] == "under_signed", out.stdout
        done = approve(daemon.state_dir, held["result"]["approval_id"])
        assert done["status"] == "ok" and done["approved_by"] == "nobody", done
        assert sim.devices[1].grant.direction == "out" and sim.devices[1].grant.passes_left == 2

        sim.passage("out", count=2)
        sim.wait_for(lambda: not sim.devices[1].queue, 10)
        out = _cli(daemon, "turnstile", "counters", "lane1")
        assert out.returncode == 0 and out.stdout.strip() == "lane1: in 0, out 2", out.stderr
        # The daemon's status catches up at once (not at its next 10 s refresh) and says how old it is.
        def status_counters():
            st = json.loads(_cli(daemon, "turnstile", "status", "lane1", "--json").stdout)
            return st["devices"]["1"]["counters"], st["figures_age_s"]
        deadline = time.monotonic() + 3
        while status_counters()[0] != {"in": 0, "out": 2} and time.monotonic() < deadline:
            time.sleep(0.1)
        counters, age = status_counters()
        assert counters == {"in": 0, "out": 2} and 0 <= age < 3

        out = _cli(daemon, "drivers", "test", "lane1", "--json")
        result = json.loads(out.stdout)
        assert out.returncode == 0 and result["ok"] and result["round_trip_ms"] > 0
        assert result["result"]["status"]["mode"] == "locked"

        tail = _cli(daemon, "events", "tail", "-n", "50", "--type", "command.*", "--json")
        done = [json.loads(line) for line in tail.stdout.splitlines()]
        grants = [e["payload"] for e in done if e["payload"]["name"] == "grant"]
        assert [g["status"] for g in grants] == ["rejected", "ok"]  # held, then approved
        assert grants[1]["operator"] == getpass.getuser() and grants[1]["approved_by"] == "nobody"

        sim.mute(True)
        out = _cli(daemon, "turnstile", "unlock", "lane1", "--json")
        held = json.loads(out.stdout)["result"]
        assert out.returncode == 1 and held["reason"] == "under_signed"
        done = approve(daemon.state_dir, held["result"]["approval_id"])
        assert done["status"] == "failed" and "NOT confirmed" in done["detail"], done
        out = _cli(daemon, "turnstile", "grant", "nope", "--dir", "in")
        assert out.returncode == 1 and "no driver named 'nope'" in out.stderr
    finally:
        sim.stop()


def test_standalone_simulator_prints_its_port_and_answers(tmp_path):
    link = tmp_path / "ttySIM"
    proc = subprocess.Popen([sys.executable, "-m", "edge", "sim", "turnstile", "--codec", "bcc-p2p",
                             "--link", str(link), "--baud", "115200", "--json",
                             "--scenario", "passage in 2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["port"] == str(link) and info["pty"].startswith("/dev/pts/")
        codec = get_codec("bcc-p2p")
        decoder = codec.decoder()
        got = []
        with serial.Serial(info["port"], 115200, timeout=0.2) as port:
            for _ in range(50):
                got += [r.message for r in decoder.feed(port.read(64))]
                if sum(isinstance(x, m.DeviceEvent) for x in got) >= 1:
                    break
            assert isinstance(got[0], m.DeviceEvent) and got[0].kind == m.EventKind.PASSAGE
            port.write(codec.encode(m.EventAck()))
            port.write(codec.encode(m.ReadCounters()))
            for _ in range(50):
                got += [r.message for r in decoder.feed(port.read(64))]
                if any(isinstance(x, m.Counters) for x in got):
                    break
        assert m.Counters(2, 0) in got
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    assert not os.path.lexists(link)


def test_simulated_lane_inside_the_daemon_driven_by_commands(tmp_path, edge_daemon, base_config):
    """sim.turnstile + turnstile.serial in one daemon: a site acceptance test without hardware."""
    from edge.commands.local import send

    port = tmp_path / "tty-sim"
    base_config["drivers"] = [
        {"name": "sim1", "kind": "sim.turnstile", "codec": "bcc-p2p", "path": str(port), "baudrate": 115200,
         "auto_pass": True},
        {**_lane(port, "bcc-p2p"), "reconnect_initial_s": 0.05},
    ]
    base_config["commands"] = SECOND_OPERATOR_CONFIG
    daemon = edge_daemon(base_config)
    state = base_config["state_dir"]
    pause = threading.Event()
    for _ in range(200):  # the serial driver finds the port once the simulator has made it
        if send(state, "lane1", "ping", {})["status"] == "ok":
            break
        pause.wait(0.05)
    held = send(state, "lane1", "grant", {"direction": "out"})  # a barrier command: two operators
    assert held["reason"] == "under_signed"
    assert approve(state, held["result"]["approval_id"])["status"] == "ok"

    def turnstile_events():
        out = _cli(daemon, "events", "tail", "-n", "100", "--type", "turnstile.*", "--json").stdout
        return [json.loads(line)["type"] for line in out.splitlines()]

    reply = send(state, "sim1", "step", {"steps": "forced in; emergency on"})
    assert reply["status"] == "ok" and reply["result"]["started"] == ["forced", "emergency"]
    bad = send(state, "sim1", "step", {"steps": "levitate"})
    assert (bad["status"], bad["reason"]) == ("rejected", "malformed") and "unknown step 'levitate'" in bad["detail"]
    for _ in range(100):
        types = turnstile_events()
        if {"turnstile.forced", "turnstile.emergency", "turnstile.passage"} <= set(types):
            break
    assert {"turnstile.online", "turnstile.granted", "turnstile.passage", "turnstile.forced",
            "turnstile.emergency"} <= set(types)
    refused = send(state, "lane1", "lock", {})
    assert refused["status"] == "failed" and "fire-alarm" in refused["detail"]


def test_engineer_cli_drives_a_modbus_lane_and_its_lockdown_survives_a_restart(tmp_path, edge_daemon, base_config):
    """`edge turnstile` works on a turnstile.modbus lane as on a serial one (same commands), and
    `edge turnstile status` shows the lockdown the driver kept across a daemon restart, with
    what ends it; a driver that is no turnstile is refused with the command that reaches it."""
    from drivers.sim.modbus_io import ModbusIoSim
    from edge.testing.wait import wait_for

    sim = ModbusIoSim().start()
    try:
        base_config["drivers"] = [
            {"name": "lane2", "kind": "turnstile.modbus", "host": "127.0.0.1", "tcp_port": sim.port,
             "coils": {"release_in": 0, "release_out": 1}, "inputs": {"passage_in": 0, "passage_out": 1},
             "reconnect_initial_s": 0.05, "reconnect_max_s": 0.3},
            {"name": "hb", "kind": "sim.heartbeat", "rate": 1.0}]
        base_config["commands"] = SECOND_OPERATOR_CONFIG
        daemon = edge_daemon(base_config)

        def lane_status():
            out = _cli(daemon, "turnstile", "status", "lane2", "--json")
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)
        wait_for(lambda: lane_status().get("in_service"), 20, "the module in service")

        out = _cli(daemon, "turnstile", "lockdown", "lane2", "--reason", "drill")
        assert out.returncode == 0 and out.stdout.strip() == ("lane2: lockdown acknowledged by the controller; "
                                                              "mode now lockdown"), out.stderr
        # one person's `lock` does not end a lockdown, and says so
        out = _cli(daemon, "turnstile", "lock", "lane2")
        first, hint = out.stdout.strip().splitlines()
        assert out.returncode == 0 and first.endswith("mode now lockdown"), out.stderr
        assert "stays in lockdown" in hint and "edge turnstile release lane2" in hint

        daemon.restart()
        status = wait_for(lambda: (s := lane_status()).get("in_service") and s, 20, "the module back in service")
        assert status["mode"] == "lockdown"
        assert status["advice"] == ["in lockdown: every grant is refused; `edge turnstile release lane2` ends it "
                                    "(two people: a second operator approves); when the gate itself is in "
                                    "lockdown (`edge gate status`), `edge gate mode normal --reason TEXT` ends "
                                    "it for every lane instead"]
        text = _cli(daemon, "turnstile", "status", "lane2").stdout
        assert "  module: in service, mode lockdown, in 0 / out 0" in text

        out = _cli(daemon, "turnstile", "grant", "lane2", "--dir", "in", "--reason", "visitor escort", "--json")
        held = json.loads(out.stdout)["result"]
        assert out.returncode == 1 and held["reason"] == "under_signed", out.stdout
        refused = approve(daemon.state_dir, held["result"]["approval_id"])
        assert refused["status"] == "failed" and "in lockdown" in refused["detail"], refused
        assert not any(level for _, coil, level in sim.coil_log if coil == 0)  # no release pulse

        out = _cli(daemon, "turnstile", "release", "lane2", "--reason", "drill over", "--json")
        held = json.loads(out.stdout)["result"]
        assert approve(daemon.state_dir, held["result"]["approval_id"])["status"] == "ok"
        assert _cli(daemon, "turnstile", "counters", "lane2").stdout.strip() == "lane2: in 0, out 0"

        other = _cli(daemon, "turnstile", "status", "hb", "--json")
        assert other.returncode == 1 and json.loads(other.stdout)["error"] == (
            "driver 'hb' is a sim.heartbeat, not a turnstile (turnstile.serial or turnstile.modbus); "
            "`edge cmd local hb NAME` sends it a command of its own")
    finally:
        sim.stop()
