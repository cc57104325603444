"""Local commands through the real daemon's control socket: same router, same rules, recorded."""

from __future__ import annotations

import getpass
import json
import stat

import pytest

from edge.commands.local import SOCKET_NAME, ControlUnavailable, send
from edge.store import StoreReader


@pytest.fixture
def daemon(edge_daemon, base_config):
    base_config["drivers"] = [{"name": "hb", "kind": "sim.heartbeat", "rate": 5.0}]
    return edge_daemon(base_config)


def recorded(daemon, type_prefix: str) -> list[dict]:
    reader = StoreReader(daemon.state_dir)
    try:
        events = [json.loads(body) for _seq, body, _acked in reader.tail(10_000)]
    finally:
        reader.close()
    return [e for e in events if e["type"].startswith(type_prefix)]


def test_local_command_runs_in_the_driver_and_is_recorded_with_the_operator(daemon):
    sock = daemon.state_dir / SOCKET_NAME
    assert stat.S_IMODE(sock.stat().st_mode) == 0o660
    result = send(daemon.state_dir, "hb", "ping", {}, reason="engineer check")
    assert result["status"] == "ok" and result["result"]["pong"] is True
    assert result["origin"] == "local" and result["operator"] == getpass.getuser()
    events = recorded(daemon, "command.result")
    assert [e["payload"]["id"] for e in events] == [result["id"]]
    assert events[0]["payload"]["operator"] == getpass.getuser() and events[0]["source"] == "commands"


def test_builtin_edge_commands(daemon):
    assert send(daemon.state_dir, "edge", "ping")["result"]["pong"] is True
    status = send(daemon.state_dir, "edge", "status")["result"]
    assert status["device_id"] == "dev-1" and "hb" in status["drivers"]
    assert send(daemon.state_dir, "edge", "set-log-level", {"level": "debug"})["status"] == "ok"
    bad = send(daemon.state_dir, "edge", "set-log-level", {"level": "loud"})
    # a bad argument the daemon's own check sees is refused before it runs, as for any target
    assert (bad["status"], bad["reason"]) == ("rejected", "malformed") and "must be one of" in bad["detail"]
    no_link = send(daemon.state_dir, "edge", "rebirth")
    assert no_link["status"] == "failed" and "no MQTT link" in no_link["detail"]
    unknown = send(daemon.state_dir, "edge", "reboot")
    # An undeclared command is a barrier command, but one the daemon does not have would only fail:
    # refused at once, never run and never held for a second operator.
    assert unknown["status"] == "rejected" and unknown["reason"] == "malformed"
    assert "target 'edge' has no command 'reboot'" in unknown["detail"] and "edge cmd approve" not in unknown["detail"]


def test_local_rejections_are_results_and_alarms(daemon):
    wrong = send(daemon.state_dir, "lane9", "ping")
    assert wrong["status"] == "rejected" and wrong["reason"] == "wrong_target"
    first = send(daemon.state_dir, "hb", "ping", command_id="retry-0001")
    again = send(daemon.state_dir, "hb", "ping", command_id="retry-0001")
    assert first["status"] == "ok" and again["reason"] == "replay"
    undeclared = send(daemon.state_dir, "hb", "explode")  # not a heartbeat's: refused by its check
    assert undeclared["status"] == "rejected" and undeclared["reason"] == "malformed"
    alarms = recorded(daemon, "system.command_rejected")
    assert sorted(a["payload"]["reason"] for a in alarms) == ["malformed", "replay", "wrong_target"]
    assert all(a["priority"] == "alarm" for a in alarms)


def test_bad_requests_get_a_clear_answer(daemon):
    bad = send(daemon.state_dir, "hb", "Not A Name!")
    assert bad["status"] == "rejected" and bad["reason"] == "malformed" and "name" in bad["detail"]
    import socket

    with socket.socket(socket.AF_UNIX) as raw:  # a client that does not speak JSON
        raw.connect(str(daemon.state_dir / SOCKET_NAME))
        raw.sendall(b"hello\n")
        reply = json.loads(raw.makefile("rb").readline())
    assert reply["status"] == "error" and "not valid JSON" in reply["detail"]


def test_cli_cmd_local_exit_codes(daemon):
    ok = daemon.cli("cmd", "local", "hb", "ping", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "ok"
    text = daemon.cli("cmd", "local", "edge", "set-log-level", "--arg", "level=info")
    assert text.returncode == 0 and "edge set-log-level: ok" in text.stdout
    rejected = daemon.cli("cmd", "local", "nope", "ping")
    assert rejected.returncode == 1 and "wrong_target" in rejected.stdout
    daemon.stop()
    down = daemon.cli("cmd", "local", "hb", "ping")
    assert down.returncode == 69 and "is the daemon running" in down.stderr


def test_cli_approve_of_an_unknown_id_names_the_id(daemon):
    out = daemon.cli("cmd", "approve", "approve-nonsense")
    assert out.returncode == 1
    assert out.stdout.splitlines()[0] == "approve-nonsense: rejected (expired)"
    assert "no pending request 'approve-nonsense': mistyped, expired" in out.stdout
    assert "if it is not there, the first operator asks again" in out.stdout  # what to do next


def test_send_without_daemon(tmp_path):
    with pytest.raises(ControlUnavailable, match="is the daemon running"):
        send(tmp_path, "hb", "ping")


def test_a_command_that_expires_while_queued_is_not_run():
    import time

    from edge.config import DriverEntry, SupervisorSettings
    from edge.errors import CommandError
    from edge.supervisor import Supervisor

    sup = Supervisor([DriverEntry(name="hb", kind="sim.heartbeat", rate=1.0)], lambda *a: None,
                     SupervisorSettings())
    sup.start()
    try:
        runner = sup.runner("hb")
        deadline = time.monotonic() + 10
        while runner.health()["status"] != "ok":  # the driver thread builds its driver first
            assert time.monotonic() < deadline
            runner.stopping.wait(0.01)
        assert runner.submit("ping", {}, not_after=time.time() + 60).result(10)["pong"] is True
        with pytest.raises(CommandError, match="expired while waiting"):
            runner.submit("ping", {}, not_after=time.time() - 1).result(10)
    finally:
        sup.stop()


def test_a_queued_command_expires_by_the_daemons_trusted_time_not_the_wall_clock():
    import time

    from edge.config import DriverEntry, SupervisorSettings
    from edge.errors import CommandError
    from edge.supervisor import Supervisor

    def trusted():  # the time floor is an hour past the wall clock (the clock was set back)
        return time.time() + 3600

    sup = Supervisor([DriverEntry(name="hb", kind="sim.heartbeat", rate=1.0)], lambda *a: None,
                     SupervisorSettings(), now=trusted)
    sup.start()
    try:
        runner = sup.runner("hb")
        deadline = time.monotonic() + 10
        while runner.health()["status"] != "ok":
            assert time.monotonic() < deadline
            runner.stopping.wait(0.01)
        assert runner._driver.ctx.now() >= time.time() + 3590  # the driver is told the same time
        with pytest.raises(CommandError, match="expired while waiting"):  # ended by the real time
            runner.submit("ping", {}, not_after=time.time() + 60).result(10)
        assert runner.submit("ping", {}, not_after=time.time() + 7200).result(10)["pong"] is True
    finally:
        sup.stop()


def test_unknown_socket_group_does_not_stop_the_gate(edge_daemon, base_config):
    base_config["commands"] = {"local_group": "no-such-group-for-edge"}
    daemon = edge_daemon(base_config)
    assert send(daemon.state_dir, "edge", "ping")["status"] == "ok"
    assert "control_socket_group_not_set" in daemon.log_tail()


# -- the two-person flow as the operators read it ------------------------------------------------

def _cli(daemon, *args, input=None):
    """The CLI in-process against the running daemon's config (click's confirm reads ``input``)."""
    from types import SimpleNamespace

    from click.testing import CliRunner

    from edge.cli import cli

    r = CliRunner().invoke(cli, ["--config", str(daemon.config_path), *args], input=input)
    return SimpleNamespace(returncode=r.exit_code, stdout=r.stdout, stderr=r.stderr)


@pytest.fixture
def modbus_lane(edge_daemon, base_config):
    """A daemon with a Modbus turnstile lane (lane2, on a simulated I/O module) whose barrier
    commands wait for a second operator (``nobody``, tests/_trust_helpers.py)."""
    from drivers.sim.modbus_io import ModbusIoSim
    from tests._trust_helpers import SECOND_OPERATOR_CONFIG

    sim = ModbusIoSim().start()
    base_config["drivers"] = [
        {"name": "lane2", "kind": "turnstile.modbus", "host": "127.0.0.1", "tcp_port": sim.port,
         "coils": {"release_in": 0, "release_out": 1}, "inputs": {"passage_in": 0, "passage_out": 1},
         "reconnect_initial_s": 0.05, "reconnect_max_s": 0.3}]
    base_config["commands"] = {**SECOND_OPERATOR_CONFIG, "local_approval_s": 300}
    try:
        yield edge_daemon(base_config), sim
    finally:
        sim.stop()


def test_a_held_request_reads_as_held_with_the_approval_command_and_its_time(modbus_lane):
    """`edge turnstile grant` printed 'error: lane2 grant: rejected: …' for what is the normal
    outcome of a barrier command. It now says held, waiting for a second operator, the id, the
    command they run and until when; `edge cmd pending` says how long each request has left."""
    import re

    daemon, _ = modbus_lane
    out = _cli(daemon, "turnstile", "grant", "lane2", "--dir", "in", "--reason", "escorted visitor")
    assert out.returncode == 1 and "error" not in out.stderr + out.stdout and "rejected" not in out.stdout, out
    first, how, command, after = out.stdout.splitlines()
    approval = re.search(r"\(approval id (approve-[0-9a-f]{8})\)\.$", first).group(1)
    assert first.startswith("held: lane2 grant is a barrier command, so it waits for a second operator; "
                            "nothing has run yet"), first
    assert re.fullmatch(r"  Another operator, logged in under their own account, approves it within 5 min "
                        r"\(until \d\d:\d\d:\d\d\) with:", how), how
    assert command == f"    edge cmd approve {approval}" and "edge cmd pending" in after
    scripted = json.loads(_cli(daemon, "turnstile", "grant", "lane2", "--dir", "out", "--json").stdout)
    assert (scripted["ok"], scripted["state"], scripted["valid_s"]) == (False, "held", 300), scripted
    assert scripted["result"]["reason"] == "under_signed"  # the daemon's answer, as before
    local = _cli(daemon, "cmd", "local", "lane2", "unlock", "--reason", "jammed")
    assert local.returncode == 1 and local.stdout.startswith("held: lane2 unlock is a barrier command"), local
    listed = _cli(daemon, "cmd", "pending").stdout.splitlines()
    assert len(listed) == 3 and listed[0].startswith(f"{approval}  lane2 grant "), listed
    assert all(re.search(r"\d+s ago, expires in (5 min|\d+s): ", line) for line in listed), listed
    assert 290 < json.loads(_cli(daemon, "cmd", "pending", "--json").stdout)[0]["expires_in_s"] <= 300


def test_the_requester_approving_is_refused_at_once_and_a_second_operator_is_asked(modbus_lane):
    """`edge cmd approve` by the account that asked showed the request and asked 'run it now?'
    only for the daemon to refuse it. The pending list names the requester, so it refuses at
    once, saying why; --json has the shape of every failure and names the request. A request
    from another account is shown and asked about, and runs on yes (positive control)."""
    from edge.commands.local import approve as approve_as_me
    from edge.commands.local import pending
    from edge.testing.wait import wait_for
    from tests._trust_helpers import as_second_operator

    daemon, _ = modbus_lane
    me = getpass.getuser()
    held = send(daemon.state_dir, "lane2", "grant", {"direction": "in"}, "escorted visitor")
    approval = held["result"]["approval_id"]
    own = _cli(daemon, "cmd", "approve", approval, input="y\n")
    assert own.returncode == 1 and "you approve" not in own.stdout and "run it now" not in own.stdout, own
    assert own.stderr.startswith(f"error: you ({me}) asked for {approval}: the approval must come from a second "
                                 "operator logged in under their own account; nothing was run, and the request "
                                 "waits "), own.stderr
    scripted = _cli(daemon, "cmd", "approve", approval, "--yes", "--json")
    refused = json.loads(scripted.stdout)
    assert scripted.returncode == 1 and refused["ok"] is False and refused["error"].startswith(f"you ({me}) asked")
    assert (refused["target"], refused["name"], refused["requested_by"], refused["approval_id"]) == (
        "lane2", "grant", me, approval), refused
    assert [w["approval_id"] for w in pending(daemon.state_dir)] == [approval]  # still waiting
    # the daemon's own refusal names the request too (not null), for clients without the CLI
    direct = approve_as_me(daemon.state_dir, approval)
    assert (direct["reason"], direct["target"], direct["name"]) == ("under_signed", "lane2", "grant"), direct
    unknown = json.loads(_cli(daemon, "cmd", "approve", "approve-00000000", "--yes", "--json").stdout)
    assert unknown["ok"] is False and unknown["error"].startswith("no pending request 'approve-00000000'")
    assert unknown["reason"] == "expired" and "target" not in unknown and "name" not in unknown, unknown

    # positive control: a request from another account is shown, asked about, and runs on yes
    wait_for(lambda: send(daemon.state_dir, "lane2", "read_counters")["status"] == "ok", 20, "the module")
    theirs = as_second_operator(daemon.state_dir, {"target": "lane2", "name": "unlock", "args": {},
                                                   "reason": "jammed"})["result"]["approval_id"]
    out = _cli(daemon, "cmd", "approve", theirs, input="y\n")
    assert out.returncode == 0, out
    assert "you approve: lane2 unlock {}  asked by nobody " in out.stdout and "expires in" in out.stdout
    assert "run it now, with your name as the second operator?" in out.stdout and "lane2 unlock: ok" in out.stdout
    ran = [e["payload"] for e in recorded(daemon, "command.result") if e["payload"]["id"] == theirs]
    assert [(r["status"], r["operator"], r["approved_by"]) for r in ran] == [("ok", "nobody", me)], ran


def test_edge_status_shows_a_modbus_lanes_lockdown_and_what_ends_it(modbus_lane):
    """`edge status` showed a Modbus lane in lockdown as just 'ok'. Its line now carries the lane's
    mode and what ends a lockdown; in normal mode it says normal (positive control)."""
    from edge.testing.wait import wait_for

    daemon, _ = modbus_lane

    def lane_line():
        out = _cli(daemon, "status")
        assert out.returncode == 0 and "None" not in out.stdout, out.stdout
        return next(line for line in out.stdout.splitlines() if line.startswith("driver  lane2 "))
    wait_for(lambda: ", mode normal" in lane_line(), 20, "the lane in service, normal")
    assert lane_line().split()[2:4] == ["ok", "turnstile.modbus,"], lane_line()
    assert send(daemon.state_dir, "lane2", "lockdown", {}, "drill")["status"] == "ok"
    line = wait_for(lambda: "mode lockdown" in (text := lane_line()) and text, 10, "the lockdown in edge status")
    assert line.endswith("turnstile.modbus, mode lockdown: every grant is refused until `edge turnstile release "
                         "lane2` (two people: a second operator approves); when the gate itself is in lockdown "
                         "(`edge gate status`), `edge gate mode normal --reason TEXT` ends it for every lane "
                         "instead"), line
    report = json.loads(_cli(daemon, "status", "--json").stdout)
    assert report["daemon"]["drivers"]["lane2"]["mode"] == "lockdown"


def test_edge_status_shows_a_serial_controllers_lockdown_and_what_ends_it(tmp_path, edge_daemon, base_config):
    """A serial turnstile's mode lives in its controller: `edge status` reads it from the status
    reply and says what ends a lockdown; a controller in normal mode says locked (its normal)."""
    from drivers.sim.turnstile import TurnstileSim
    from edge.testing.wait import wait_for

    sim = TurnstileSim("rs485-bus", tmp_path / "tty-lane1", baudrate=115200).start()
    try:
        base_config["drivers"] = [{"name": "lane1-ts", "kind": "turnstile.serial", "codec": "rs485-bus",
                                   "port": sim.path, "baudrate": 115200}]
        daemon = edge_daemon(base_config)

        def lane_line():
            out = _cli(daemon, "status")
            assert out.returncode == 0 and "None" not in out.stdout, out.stdout
            return next(line for line in out.stdout.splitlines() if line.startswith("driver  lane1-ts "))
        wait_for(lambda: ", mode locked" in lane_line(), 20, "the controller's normal mode")
        assert send(daemon.state_dir, "lane1-ts", "lockdown", {}, "drill")["status"] == "ok"
        line = wait_for(lambda: "mode lockdown" in (text := lane_line()) and text, 15, "the lockdown in edge status")
        assert line.endswith("mode lockdown: every grant is refused until `edge turnstile release lane1-ts` "
                             "(two people: a second operator approves); when the gate itself is in lockdown "
                             "(`edge gate status`), `edge gate mode normal --reason TEXT` ends it for every "
                             "lane instead"), line
    finally:
        sim.stop()
