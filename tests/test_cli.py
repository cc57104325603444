"""The field engineer's commands on a real store: exit codes, --json everywhere, clear errors,
and the click-free fast path saying exactly what the click path says."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.events import make_event
from edge.store import Store
from edge.testing.daemon import dump_toml


@pytest.fixture
def device(tmp_path):
    """A config and a stopped device's store: 6 events, 2 of them acked."""
    state = tmp_path / "state"
    config = tmp_path / "edge.toml"
    config.write_text(dump_toml({
        "device_id": "gate-1", "site": "hmp-a", "role": "gate", "state_dir": str(state),
        "drivers": [{"name": "lane1", "kind": "sim.heartbeat", "rate": 1.0}]}))
    store = Store(state, device="gate-1", site="hmp-a")
    for i, (type_, prio) in enumerate([("turnstile.passage", "normal"), ("sim.heartbeat", "telemetry")] * 3):
        store.append(make_event(device="gate-1", site="hmp-a", type=type_, source="lane1",
                                priority=prio, payload={"n": i}))
    store.mark_acked([1, 2])
    store.close()
    return config


def run(config, *args) -> subprocess.CompletedProcess:
    """The real console entry point (fast path included)."""
    return subprocess.run([sys.executable, "-m", "edge", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60)


def invoke(config, *args):
    """The click path, in-process."""
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def test_outbox_stats_text_and_json(device):
    result = invoke(device, "outbox", "stats", "--json")
    assert result.exit_code == 0
    stats = json.loads(result.output)
    assert stats["pending"] == 4 and stats["acked_total"] == 2 and stats["oldest_pending_seq"] == 3
    assert stats["stored"] == 6 and stats["next_seq"] == 7 and stats["full"] is False
    text = invoke(device, "outbox", "stats").output
    assert "pending        4 (oldest seq 3" in text and "acked          2 total" in text


def test_events_tail_filters_and_formats(device):
    out = run(device, "events", "tail", "-n", "3")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert [int(line.split()[0]) for line in lines] == [4, 5, 6]
    out = run(device, "events", "tail", "--type", "turnstile.*", "--json")
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["seq"] for e in events] == [1, 3, 5] and {e["type"] for e in events} == {"turnstile.passage"}
    first = run(device, "events", "tail", "-n", "6").stdout.splitlines()[0]
    assert " sent " in first and "turnstile.passage" in first  # acked shows as sent


def test_fast_path_and_click_path_say_the_same(device):
    for args in (["events", "tail", "-n", "4", "--json"], ["events", "tail", "--type", "sim.*"]):
        assert run(device, *args).stdout == invoke(device, *args).output
    fast, slow = run(device, "status", "--json"), invoke(device, "status", "--json")
    assert fast.returncode == slow.exit_code == 3
    a, b = json.loads(fast.stdout), json.loads(slow.output)
    for doc in (a, b):
        for key in ("oldest_pending_age_s", "last_ack_age_s"):
            doc["outbox"].pop(key)
        doc["disk"].pop("free_bytes")
    assert a == b


def test_events_tail_follow_prints_new_events(device):
    proc = subprocess.Popen([sys.executable, "-m", "edge", "--config", str(device), "events", "tail",
                             "-n", "1", "--follow", "--json"], stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(proc.stdout.readline())["seq"] == 6
        store = Store(device.parent / "state", device="gate-1", site="hmp-a")
        try:
            new = store.append(make_event(device="gate-1", site="hmp-a", type="sim.late", source="t"))
        finally:
            store.close()
        assert json.loads(proc.stdout.readline())["id"] == new.id
    finally:
        proc.terminate()
        proc.wait(10)


def test_drivers_list(device):
    data = json.loads(invoke(device, "drivers", "list", "--json").output)
    assert data["kinds"]["sim.heartbeat"] == "drivers.sim.heartbeat:HeartbeatDriver"
    assert data["configured"] == [{"name": "lane1", "kind": "sim.heartbeat"}]
    assert "lane1" in invoke(device, "drivers", "list").output


def test_status_of_a_stopped_device(device):
    out = run(device, "status")
    assert out.returncode == 3
    assert "daemon  NOT RUNNING (start it: systemctl start edge, or edge run)" in out.stdout
    assert "outbox  4 pending" in out.stdout


@pytest.mark.parametrize("args", [["status", "--json"], ["outbox", "stats", "--json"],
                                  ["events", "tail", "--json"], ["audit", "verify", "--json"]])
def test_commands_without_a_store_answer_clearly(tmp_path, args):
    config = tmp_path / "edge.toml"
    config.write_text(dump_toml({"device_id": "d", "site": "s", "role": "tablet",
                                 "state_dir": str(tmp_path / "never-started")}))
    out = run(config, *args)
    assert "Traceback" not in out.stderr
    if args[0] == "status":
        assert out.returncode == 3
        assert "has `edge run` started" in json.loads(out.stdout)["outbox"]["error"]
    else:
        assert out.returncode == 1
        text = out.stdout + out.stderr
        assert "no event store in" in text and "has `edge run` started" in text


def test_fast_commands_with_a_bad_config_exit_78(tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text('device_id = "d"\nsite = "s"\nrole = "gateway"\n')
    for args in (["status"], ["events", "tail"]):
        out = run(config, *args)
        assert out.returncode == 78, out.stderr
        assert "role: got 'gateway'" in out.stderr
    missing = run(tmp_path / "absent.toml", "status")
    assert missing.returncode == 78 and "file not found" in missing.stderr


@pytest.mark.parametrize("args", [["status"], ["events", "tail"], ["outbox", "stats"], ["keys"],
                                  ["drivers", "test", "lane1"], ["cmd", "pending"]])
def test_json_commands_with_a_bad_config_print_json_and_exit_78(tmp_path, args):
    """A script running `edge ... --json` parses stdout: a bad config is JSON there too."""
    config = tmp_path / "edge.toml"
    config.write_text('device_id = "d"\nsite = "s"\nrole = "gateway"\n')
    out = run(config, *args, "--json")
    assert out.returncode == 78, out.stderr
    answer = json.loads(out.stdout)
    assert answer["ok"] is False and len(answer["errors"]) == 1
    assert answer["errors"][0] == f"{config}: role: got 'gateway'; Input should be 'gate' or 'tablet'"
    assert "config error: " in out.stderr  # the person at the terminal still reads it
    missing = run(tmp_path / "absent.toml", *args, "--json")
    assert missing.returncode == 78 and "file not found" in json.loads(missing.stdout)["error"]


def test_every_core_command_has_json(device):
    for args in (["status"], ["events", "tail"]):  # the fast path, in a real process
        out = run(device, *args, "--json")
        assert out.returncode in (0, 3), (args, out.stderr)
        for line in out.stdout.splitlines():
            json.loads(line)
    for args in (["outbox", "stats"], ["audit", "verify"], ["config", "check"], ["drivers", "list"]):
        result = invoke(device, *args, "--json")
        assert result.exit_code == 0, (args, result.output)
        for line in result.output.splitlines():
            json.loads(line)


def test_help_lists_the_commands_quickly(device):
    started = time.monotonic()
    out = run(device, "--help")
    assert out.returncode == 0 and time.monotonic() - started < 10
    for name in ("run", "status", "outbox", "events", "audit", "config", "drivers"):
        assert f"  {name}" in out.stdout


def test_status_warns_when_a_running_daemon_stopped_updating(device):
    """Alive but wedged: the pid exists, the status file is old. Say so, and what to do."""
    import os

    state = device.parent / "state"
    (state / "status.json").write_text(json.dumps({
        "running": True, "pid": os.getpid(), "started_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:05:00+00:00", "drivers": {}, "components": {}}))
    out = run(device, "status")
    assert out.returncode == 0
    assert "WARNING: status last updated" in out.stdout and "may be hung" in out.stdout


def test_tools_log_to_stderr_and_keep_stdout_for_the_answer(tmp_path):
    # A drain against a broker that refuses: the MQTT layer logs its errors, and the answer
    # on stdout must still be nothing but the JSON (scripts parse it).
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "edge.toml"
    config.write_text(dump_toml({"device_id": "gate-1", "site": "hmp-a", "role": "gate",
                                 "state_dir": str(tmp_path / "state"),
                                 "mqtt": {"brokers": [f"mqtt://127.0.0.1:{port}"]}}))
    store = Store(tmp_path / "state", device="gate-1", site="hmp-a")
    store.append(make_event(device="gate-1", site="hmp-a", type="system.test", source="t"))  # one to send
    store.close()
    r = run(config, "outbox", "drain", "--timeout", "2", "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["ok"] is False  # stdout: the JSON alone
    assert "mqtt_error" in r.stderr and "connection refused" in r.stderr


def test_cmd_sign_with_a_wrong_key_file_says_so_without_a_traceback(device, tmp_path):
    from edge.signing import generate_keypair

    _key, pub, _kid = generate_keypair(tmp_path / "keys", "ops", ["command"])
    sign = ["cmd", "sign", "--target", "lane1", "--name", "ping", "--device", "gate-1"]
    for wrong in (device, pub):  # a config file; the public half instead of the private key
        out = run(device, *sign, "--key", str(wrong), "--json")
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        error = json.loads(out.stdout)["error"]
        assert error.startswith(f"{wrong}: not a PEM private key") and "edge keys gen" in error


@pytest.mark.parametrize("ttl", ["nan", "inf", "1e308", "2592001"])
def test_cmd_sign_refuses_a_ttl_no_device_accepts(device, tmp_path, ttl):
    from edge.signing import generate_keypair

    key, _pub, _kid = generate_keypair(tmp_path / "keys", "ops", ["command"])
    out = run(device, "cmd", "sign", "--key", str(key), "--target", "lane1", "--name", "ping",
              "--device", "gate-1", "--ttl", ttl)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "Invalid value for '--ttl'" in out.stderr
    ok = run(device, "cmd", "sign", "--key", str(key), "--target", "lane1", "--name", "ping",
             "--device", "gate-1", "--ttl", "2592000", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["target"] == "lane1"


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e308"])
@pytest.mark.parametrize("args", [["cmd", "local", "lane1", "ping"], ["drivers", "test", "lane1"],
                                  ["outbox", "drain"]])
def test_a_timeout_that_is_no_duration_is_a_usage_error(device, args, value):
    """These reached socket.settimeout: a traceback for -1, nan or 1e308, and for 0 a non-blocking
    socket that read 'the daemon closed the control connection' from a daemon that did not."""
    out = run(device, *args, "--timeout", value, "--json")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "Invalid value for '--timeout'" in out.stderr


@pytest.mark.parametrize(("uri", "problem"), [("garbage", "has scheme ''; expected mqtt:// or mqtts://"),
                                              ("mqtt://broker:99999", "has an invalid port; expected 1-65535")])
def test_cmd_sign_names_the_publish_option_when_its_uri_is_wrong(device, tmp_path, uri, problem):
    from edge.signing import generate_keypair

    key, _pub, _kid = generate_keypair(tmp_path / "keys", "ops", ["command"])
    out = run(device, "cmd", "sign", "--key", str(key), "--target", "lane1", "--name", "ping",
              "--site", "hmp-a", "--publish", uri, "--json")
    assert out.returncode == 1
    assert json.loads(out.stdout)["error"] == f"--publish: {uri!r} {problem}"  # not the config's mqtt.brokers


@pytest.mark.parametrize(("args", "error"), [
    (["status", "--bogus"], "No such option '--bogus'."),
    (["cmd", "approve"], "Missing argument 'APPROVAL_ID'."),
    (["outbox", "drain", "--timeout", "soon"], "Invalid value for '--timeout'"),
])
def test_a_misused_command_answers_json_when_json_was_asked(args, error):
    """Scripts parse stdout: a usage error (exit 2) is JSON there too; people still get click's text."""
    scripted = CliRunner().invoke(cli, [*args, "--json"], prog_name="edge")
    assert scripted.exit_code == 2
    answer = json.loads(scripted.stdout)
    assert answer["ok"] is False and answer["error"].startswith(error) and answer["usage"].startswith("Usage: edge")
    assert error in scripted.stderr
    person = CliRunner().invoke(cli, args, prog_name="edge")
    assert person.exit_code == 2 and person.stdout == "" and error in person.stderr


def test_cmd_approve_json_without_yes_is_a_usage_error_whether_or_not_the_daemon_runs(device):
    """--yes is required with --json (its help says so): README's exit 2, a JSON error naming the fix,
    and not the daemon's 69 or a failure's 1, so a script's bug is not taken for a refusal."""
    out = invoke(device, "cmd", "approve", "approve-3f9a1c2e", "--json")
    assert out.exit_code == 2, out.output
    assert json.loads(out.stdout) == {"ok": False, "error": "--json needs --yes: read the request first (edge cmd "
                                      "pending --json), then run edge cmd approve approve-3f9a1c2e --yes --json"}
    down = invoke(device, "cmd", "approve", "approve-3f9a1c2e", "--yes", "--json")
    assert down.exit_code == 69 and "is the daemon running" in json.loads(down.stdout)["error"]


def test_events_tail_refuses_an_empty_type_pattern_instead_of_showing_everything(tmp_path):
    out = CliRunner().invoke(cli, ["events", "tail", "--type", "", "--json"], prog_name="edge")
    assert out.exit_code == 2
    assert "an empty pattern" in json.loads(out.stdout)["error"]


def test_an_operator_the_state_folder_keeps_out_is_told_why_not_given_a_traceback(device, monkeypatch):
    """An operator in group edge reaches the control socket and reads nothing else in the state
    folder: `outbox stats`, `events tail`, `edge status` and `turnstile status` said nothing useful
    (sqlite's 'unable to open database file' or a PermissionError traceback). They now name the
    file, its owner and mode, and what to do. (Root reads everything, so the kernel's refusal is
    played by os.access and read_text, which the real checks call.)"""
    import os
    import pwd
    from pathlib import Path

    from edge.cli import _fast

    closed = ("events.db", "status.json")
    real_access, real_read = os.access, Path.read_text
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: Path(p).name not in closed and
                        real_access(p, mode, *a, **k))

    def read_text(self, *a, **k):
        if self.name in closed:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *a, **k)
    monkeypatch.setattr(Path, "read_text", read_text)
    state = device.parent / "state"
    (state / "status.json").write_text("{}")
    os.chmod(state / "events.db", 0o600)  # as the daemon makes its files
    owner = pwd.getpwuid(os.stat(state / "events.db").st_uid).pw_name

    out = invoke(device, "outbox", "stats", "--json")
    assert out.exit_code == 1
    error = json.loads(out.stdout)["error"]
    assert error.startswith(f"cannot read the event store {state}/events.db: {state}/events.db (owner {owner}, ")
    assert f"lets only {owner} in: run this as {owner}" in error and "ask the daemon instead" in error
    assert _fast.main(["--config", str(device), "events", "tail"]) is None  # click's path explains it
    tail = invoke(device, "events", "tail", "-n", "2")
    assert tail.exit_code == 1 and "cannot read the event store" in tail.stderr, tail.output

    status = invoke(device, "status", "--json")
    report = json.loads(status.stdout)
    assert status.exit_code == 3 and report["daemon"]["error"].startswith(
        f"cannot read the daemon's status file {state}/status.json: ")
    assert report["outbox"]["error"] == error
    assert "daemon  UNKNOWN: cannot read the daemon's status file" in invoke(device, "status").stdout
    lane = invoke(device, "turnstile", "status", "lane1")
    assert lane.exit_code == 1 and "cannot read the daemon's status file" in lane.stderr, lane.output


def test_keys_list_is_edge_keys(device, tmp_path):
    """`edge keys list` is what a newcomer types; it answers as `edge keys` does, not 'No such command'."""
    from edge.signing import generate_keypair

    _key, pub, kid = generate_keypair(tmp_path / "keys", "ops", ["command"])
    config = device.read_text() + f'\n[trust]\ncentral_keys = ["{pub}"]\n'
    device.write_text(config)
    listed, plain = invoke(device, "keys", "list", "--json"), invoke(device, "keys", "--json")
    assert listed.exit_code == plain.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == json.loads(plain.stdout)
    assert [k["key_id"] for k in json.loads(listed.stdout)["keys"]] == [kid]
    assert kid in invoke(device, "keys", "list").stdout


def test_status_text_leaves_out_fields_without_a_value_and_says_a_lanes_mode():
    """`edge status` printed `mode_reason=None` for a gate whose mode nobody set, and a lane in
    lockdown as just 'ok'. (The report's shape is the daemon's; the real lane is in
    tests/test_commands_local.py.)"""
    from edge.cli._views import status_text

    report = {"device_id": "gate-1", "role": "gate", "site": "hmp-a", "outbox": {"error": "x"},
              "disk": {"free_bytes": 1 << 30},
              "daemon": {"running": True, "pid": 7, "started_at": "t", "figures_age_s": 1.0, "drivers": {
                  "lane2": {"status": "ok", "kind": "turnstile.modbus", "mode": "lockdown",
                            "mode_note": "every grant is refused until `edge turnstile release lane2`"},
                  "hb": {"status": "ok", "kind": "sim.heartbeat"}},
                  "components": {"gate": {"status": "ok", "mode": "normal", "mode_set_by": None,
                                          "mode_reason": None, "online": False}}}}
    lines = status_text(report).splitlines()
    assert "driver  lane2                ok        turnstile.modbus, mode lockdown: every grant is refused " \
           "until `edge turnstile release lane2`" in lines
    assert "driver  hb                   ok        sim.heartbeat" in lines
    assert "gate    status=ok mode=normal online=False" in lines and "None" not in "\n".join(lines)


def _needs_a_person_status() -> dict:
    """A running gate's status as the daemon reports it: a reader flooding, updates stalled by a
    slow link, a card locked out after wrong PINs, and a component degraded without a note."""
    return {"running": True, "pid": 7, "started_at": "t", "figures_age_s": 0.5, "drivers": {
        "reader-in": {"status": "degraded", "kind": "reader.osdp", "flooding": True, "cards_refused": 40,
                      "note": "FLOODING: 40 card reads refused in this flood, over its limit (5 at once, then 1 a "
                              "second)"},
        "reader-out": {"status": "ok", "kind": "reader.osdp", "flooding": False}},
        "components": {
            "gate": {"status": "ok", "mode": "normal", "pin_lockouts": [{"holder": "P-1"}],
                     "note": "PIN-LOCKED cards: P-1 until 22:01:31 UTC. To end one early: edge gate "
                             "clear-pin-lockout HOLDER --reason TEXT, then a second operator runs edge cmd approve ID"},
            "update": {"status": "degraded", "version": "0.1.0", "refusal_in_force": True,
                       "refusal": {"problem": "too_slow"},
                       "note": "updates STALLED: downloads are too slow; lower [update] download_min_rate"},
            "xray": {"status": "degraded", "errors": 1}}}


def test_status_text_says_why_a_driver_or_component_needs_a_person():
    """`edge status` showed a flooding reader as just 'degraded', and neither a PIN-locked card nor
    updates stalled by a slow link: their words were only in --json."""
    from edge.cli._views import status_text

    report = {"device_id": "gate-1", "role": "gate", "site": "hmp-a", "outbox": {"error": "x"},
              "disk": {"free_bytes": 1 << 30}, "daemon": _needs_a_person_status()}
    text = status_text(report)
    lines = text.splitlines()
    flood = lines.index("driver  reader-in            degraded  reader.osdp")
    assert lines[flood + 1].startswith("        reader-in: FLOODING: 40 card reads refused")
    assert lines[lines.index("gate    status=ok mode=normal") + 1].startswith("        PIN-LOCKED cards: P-1 until")
    assert "edge cmd approve ID" in text and "edge gate clear-pin-lockout HOLDER --reason TEXT" in text
    update = [n for n, line in enumerate(lines) if line.startswith("update ")][0]
    assert "note=" not in lines[update] and "None" not in text
    assert "updates STALLED" in lines[update + 1] and "download_min_rate" in lines[update + 1]


def test_doctor_fails_on_a_flooding_reader_and_stalled_updates_and_lists_locked_cards(device):
    """`edge doctor` said 'every component is running' beside a flooding reader and stalled updates.
    Now each is a FAIL with its words (exit 1); a locked card is listed, not a failure; a component
    degraded without saying why a person is needed (x-ray: one bad record once) fails nothing."""
    (device.parent / "state" / "status.json").write_text(json.dumps(_needs_a_person_status()))
    out = run(device, "doctor", "--only", "components", "--json")
    assert out.returncode == 1, out.stdout + out.stderr
    checks = json.loads(out.stdout)["checks"]
    failed = {c["target"]: c["detail"] for c in checks if not c["ok"]}
    assert set(failed) == {"reader-in", "update"}, checks
    assert failed["reader-in"].startswith("driver reader-in is degraded: FLOODING: 40 card reads refused")
    assert "download_min_rate" in failed["update"]
    assert [c["detail"] for c in checks if c["ok"]] == [
        _needs_a_person_status()["components"]["gate"]["note"].join(["gate: ", ""])]
    text = run(device, "doctor", "--only", "components")
    assert text.returncode == 1 and "FAIL  components" in text.stdout and "PIN-LOCKED cards: P-1" in text.stdout
    assert "Traceback" not in text.stdout + text.stderr and "None" not in text.stdout
