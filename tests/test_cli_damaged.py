"""A damaged device folder gets one line saying what is wrong and what to do, never a traceback:
a garbled status file, a state_dir under a file, an event store that is no database, a secrets
folder opened to others. The field engineer reads these at the gate."""

from __future__ import annotations

import json
import os

import pytest

from edge.testing.daemon import dump_toml
from tests import test_cli
from tests.test_cli import invoke, run

device = test_cli.device  # the fixture: a stopped device's config and store of 6 events


def _no_traceback(out) -> None:
    assert "Traceback" not in out.stderr + out.stdout, out.stderr


@pytest.mark.parametrize("garbage", [b"\xff\xfe not utf-8", b"[1, 2]", b"{\"running\": tr"])
def test_status_survives_a_garbled_status_file(device, garbage):
    state = device.parent / "state"
    (state / "status.json").write_bytes(garbage)
    for args in (["status"], ["status", "--json"], ["drivers", "list"], ["update", "status"]):
        out = run(device, *args)
        _no_traceback(out)
        assert out.returncode == (3 if args[0] == "status" else 0), (args, out.stderr)
    report = json.loads(run(device, "status", "--json").stdout)
    assert report["daemon"]["running"] is False and report["outbox"]["pending"] == 4


def test_status_of_a_state_dir_under_a_file_says_so(tmp_path):
    config = tmp_path / "edge.toml"  # state_dir mistyped below the config file itself
    config.write_text(dump_toml({"device_id": "d", "site": "s", "role": "gate",
                                 "state_dir": str(config / "state")}))
    out = run(config, "status", "--json")
    _no_traceback(out)
    assert out.returncode == 3
    report = json.loads(out.stdout)
    assert report["disk"]["error"] == f"{config / 'state'}: Not a directory"
    assert "no event store" in report["outbox"]["error"]


@pytest.fixture
def damaged(device):
    """The device's events.db overwritten with bytes that are no SQLite file."""
    db = device.parent / "state" / "events.db"
    db.write_bytes(os.urandom(8192))
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    return device


@pytest.mark.parametrize("args", [["events", "tail"], ["events", "tail", "-n", "5", "--json"],
                                  ["outbox", "stats"], ["outbox", "stats", "--json"],
                                  ["audit", "verify"], ["audit", "verify", "--json"]])
def test_a_damaged_store_is_named_with_what_mends_it(damaged, args):
    db = damaged.parent / "state" / "events.db"
    out = run(damaged, *args)
    _no_traceback(out)
    assert out.returncode == 1, out.stderr
    said = json.loads(out.stdout)["error"] if "--json" in args else out.stderr.strip()
    if "--json" not in args:
        assert said.startswith("error: ") and out.stdout == ""
    assert f"the event store {db} is damaged (file is not a database)" in said
    assert "systemctl restart edge" in said


def test_status_shows_a_damaged_store_and_still_answers(damaged):
    out = run(damaged, "status", "--json")
    _no_traceback(out)
    assert out.returncode == 3
    assert "is damaged (file is not a database)" in json.loads(out.stdout)["outbox"]["error"]


def test_doctor_says_a_damaged_store_is_not_a_permissions_problem(damaged):
    result = invoke(damaged, "doctor", "--only", "store", "--only", "audit", "--json")
    assert result.exit_code == 1, result.output
    checks = {c["check"]: c for c in json.loads(result.output)["checks"]}
    assert checks["store"]["detail"] == "damaged: file is not a database"
    assert checks["audit"]["detail"] == "cannot verify: the event store is damaged (file is not a database)"
    for c in checks.values():
        assert "systemctl restart edge" in c["hint"] and "permission" not in c["hint"]


def test_doctor_names_an_open_secrets_folder_instead_of_crashing(device):
    secrets = device.parent / "state" / "secrets"
    secrets.chmod(0o755)
    result = invoke(device, "doctor", "--only", "audit", "--json")
    assert result.exit_code == 1, result.output
    (check,) = json.loads(result.output)["checks"]
    assert "the secrets folder is open to group/others" in check["detail"]
    assert f"chmod 700 {secrets}" in check["detail"]
    secrets.chmod(0o700)  # the positive control: the same store verifies once the folder is closed
    result = invoke(device, "doctor", "--only", "audit", "--json")
    assert result.exit_code == 0 and json.loads(result.output)["checks"][0]["detail"] == "chain intact over 6 events"


@pytest.mark.parametrize("args", [["learning", "status"], ["learning", "verify"], ["learning", "fetch", "c1"],
                                  ["messages", "stats"]])
def test_a_tablet_command_on_a_gate_says_it_is_a_gate_not_that_the_daemon_is_down(device, args):
    """`edge learning status` on a gate said 'no local API socket ...; is the daemon running?' while
    the gate's daemon ran fine: the engineer went after the wrong problem."""
    for as_json in (False, True):
        result = invoke(device, *args, *(["--json"] if as_json else []))
        assert result.exit_code == 1, result.output
        said = json.loads(result.stdout)["error"] if as_json else result.stderr
        assert f"this device is a gate (role in {device})" in said and "on a tablet only" in said
        assert "daemon running" not in said


def test_learning_on_a_tablet_with_the_cache_off_says_so(tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text(dump_toml({"device_id": "t", "site": "s", "role": "tablet", "state_dir": str(tmp_path / "st"),
                                 "learning": {"enabled": False}}))
    result = invoke(config, "learning", "status")
    assert result.exit_code == 1 and "the e-learning cache is off on this tablet" in result.stderr
    config.write_text(dump_toml({"device_id": "t", "site": "s", "role": "tablet", "state_dir": str(tmp_path / "st")}))
    result = invoke(config, "learning", "status")  # the control: a tablet is asked for its daemon
    assert result.exit_code == 69 and "is the daemon running" in result.stderr


def test_doctor_names_a_state_dir_the_daemon_could_not_create(tmp_path):
    """doctor said 'no event store ... start the daemon once' for a state_dir under a file, and the
    daemon then refused to start (exit 78): the first hint must be the one that helps."""
    config = tmp_path / "edge.toml"
    config.write_text(dump_toml({"device_id": "d", "site": "s", "role": "gate", "state_dir": str(config / "state")}))
    result = invoke(config, "doctor", "--only", "store", "--json")
    (check,) = json.loads(result.output)["checks"]
    assert result.exit_code == 1
    assert check["detail"] == f"state_dir {config / 'state'} cannot be created: {config} is a file, not a folder"
    assert "edge config check" in check["hint"]
    config.write_text(dump_toml({"device_id": "d", "site": "s", "role": "gate", "state_dir": str(tmp_path / "st")}))
    (check,) = json.loads(invoke(config, "doctor", "--only", "store", "--json").output)["checks"]
    assert check["detail"] == f"no event store at {tmp_path / 'st' / 'events.db'}"  # a fine folder, not yet used


def test_run_with_a_folder_for_its_config_is_a_config_error_not_a_traceback(tmp_path):
    """`edge --config /etc/edge run` (the folder, not the file) crashed with IsADirectoryError and
    exit 1, which systemd restarts in a loop; a bad config is exit 78."""
    for path, said in ((tmp_path, f"config error: {tmp_path}: is a folder; expected the TOML config file in it"),
                       (tmp_path / "edge.toml" / "x", "cannot read the config file: Not a directory")):
        (tmp_path / "edge.toml").write_text("")
        out = run(path, "run")
        _no_traceback(out)
        assert out.returncode == 78 and said in out.stderr, out.stderr


def test_learning_fetch_without_the_daemon_exits_69_like_learning_status(tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text(dump_toml({"device_id": "t", "site": "s", "role": "tablet", "state_dir": str(tmp_path / "st")}))
    for args in (["learning", "fetch", "c1"], ["learning", "status"]):
        result = invoke(config, *args, "--json")
        assert result.exit_code == 69, (args, result.output)
        assert "no local API socket" in json.loads(result.stdout)["error"]
