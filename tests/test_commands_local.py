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
    assert bad["status"] == "failed" and "must be one of" in bad["detail"]
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
