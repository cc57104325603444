"""Config: the example files validate; every kind of bad config stops start-up with exit 78
and one line per problem naming the key path, the bad value and what was expected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.config import load_settings
from edge.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "config").glob("*.example.toml"))

GOOD = """\
device_id = "gate-1"
site = "site-a"
role = "gate"
state_dir = "{state}"

[[drivers]]
name = "hb"
kind = "sim.heartbeat"
rate = 2.0
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text.replace("{state}", str(tmp_path / "state")))
    return path


def _check(path: Path, env: dict | None = None):
    """`edge config check PATH` in-process: (exit code, output lines)."""
    result = CliRunner().invoke(cli, ["config", "check", str(path)], env=env)
    return result.exit_code, [line for line in result.output.splitlines() if line]


def test_examples_are_listed():
    assert {p.name for p in EXAMPLES} >= {"gate.example.toml", "tablet.example.toml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_validate_including_driver_options(path):
    settings = load_settings(path, check_drivers=True, check_files=False)
    assert settings.role in path.name
    assert settings.drivers, "an example without drivers proves nothing about driver options"
    code, lines = _check(path)
    # The examples name a device's own files (keys, certificates); on this machine they are absent,
    # and that is the only thing `config check` may find wrong.
    assert code == 78
    assert lines and all(" not found; expected an existing, readable file" in line for line in lines), lines
    assert all("/etc/edge/" in line for line in lines), lines


# what is wrong -> the TOML text
BAD = {
    "unknown_key": GOOD + 'colour = "red"\n',
    "wrong_type": GOOD.replace("[[drivers]]", '[store]\nmax_bytes = "lots"\n\n[[drivers]]'),
    "missing_required": GOOD.replace('site = "site-a"\n', ""),
    "bad_role": GOOD.replace('role = "gate"', 'role = "gateway"'),
    "bad_broker_uri": GOOD.replace("[[drivers]]", '[mqtt]\nbrokers = ["mqtt://ok:1883", "http://x:80"]\n\n[[drivers]]'),
    "broker_without_host": GOOD.replace("[[drivers]]", '[mqtt]\nbrokers = ["mqtts://:8883"]\n\n[[drivers]]'),
    "unknown_driver_kind": GOOD.replace('"sim.heartbeat"', '"sim.nope"'),
    "bad_driver_option": GOOD.replace("rate = 2.0", "rate = -1"),
    "unknown_driver_option": GOOD.replace("rate = 2.0", "rate = 2.0\nspeed = 3"),
    "duplicate_driver_name": GOOD + '\n[[drivers]]\nname = "hb"\nkind = "sim.heartbeat"\n',
    "invalid_toml": 'device_id = "unterminated\n',
}

EXPECTED_LINES = {
    "unknown_key": ["colour: got 'red'; unknown key"],
    "wrong_type": ["store.max_bytes: got 'lots'; Input should be a valid integer"],
    "missing_required": ["site: missing; this key is required"],
    "bad_role": ["role: got 'gateway'; Input should be 'gate' or 'tablet'"],
    "bad_broker_uri": ["mqtt.brokers[1]: got 'http://x:80'; scheme 'http' is not mqtt or mqtts; "
                       "expected mqtt://host:port or mqtts://host:port"],
    "broker_without_host": ["mqtt.brokers[0]: got 'mqtts://:8883'; no host name; expected mqtt://host:port"],
    "unknown_driver_kind": ["drivers[0] (hb).kind: unknown driver kind 'sim.nope'; registered kinds: ",
                            "sim.heartbeat"],
    "bad_driver_option": ["drivers[0] (hb).rate: got -1; Input should be greater than or equal to 0"],
    "unknown_driver_option": ["drivers[0] (hb).speed: got 3; unknown key"],
    "duplicate_driver_name": ["drivers[1].name: got 'hb'; already used by drivers[0]; driver names must be unique"],
    "invalid_toml": ["not valid TOML: ", "line 1"],
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_config_exits_78_naming_key_value_and_expectation(tmp_path, case):
    path = _write(tmp_path, BAD[case])
    code, lines = _check(path)
    assert code == 78, lines
    assert len(lines) == 1, f"one problem must give exactly one line: {lines}"
    assert lines[0].startswith(f"config error: {path}: ")
    for fragment in EXPECTED_LINES[case]:
        assert fragment in lines[0], (fragment, lines[0])


def test_missing_file_exits_78_and_says_what_to_do(tmp_path):
    code, lines = _check(tmp_path / "absent.toml")
    assert code == 78
    assert lines == [f"config error: {tmp_path / 'absent.toml'}: file not found "
                     "(pass --config PATH or set EDGE_CONFIG)"]


def test_several_problems_give_one_line_each_including_driver_options(tmp_path):
    text = (GOOD.replace('role = "gate"', 'role = "gateway"').replace("rate = 2.0", "rate = -1")
            + 'colour = "red"\n')
    code, lines = _check(_write(tmp_path, text))
    assert code == 78
    assert len(lines) == 3, lines
    assert any("role: got 'gateway'" in line for line in lines)
    assert any("colour: got 'red'" in line for line in lines)
    assert any("drivers[0] (hb).rate: got -1" in line for line in lines)


def test_json_output_lists_the_errors(tmp_path):
    path = _write(tmp_path, BAD["bad_role"])
    result = CliRunner().invoke(cli, ["config", "check", "--json", str(path)])
    assert result.exit_code == 78
    doc = json.loads(result.output)
    assert doc["ok"] is False and len(doc["errors"]) == 1 and "role" in doc["errors"][0]


@pytest.mark.parametrize("case", ["unknown_driver_kind", "missing"])
def test_edge_run_refuses_a_bad_config_with_78(tmp_path, case):
    """The real entry point systemd runs: exit 78 (RestartPreventExitStatus), errors on stderr."""
    path = tmp_path / "absent.toml" if case == "missing" else _write(tmp_path, BAD[case])
    proc = subprocess.run([sys.executable, "-m", "edge", "--config", str(path), "run"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78, proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"config error: {path}: "), proc.stderr
    assert not (tmp_path / "state").exists(), "nothing may start on a bad config"


def test_env_overrides_top_level_and_nested(tmp_path, monkeypatch):
    path = _write(tmp_path, GOOD)
    monkeypatch.setenv("EDGE_SITE", "site-b")
    monkeypatch.setenv("EDGE_STORE__MAX_BYTES", "1048576")
    monkeypatch.setenv("EDGE_SUPERVISOR__BACKOFF_MAX_S", "7.5")
    settings = load_settings(path)
    assert settings.site == "site-b"
    assert settings.store.max_bytes == 1048576
    assert settings.supervisor.backoff_max_s == 7.5
    assert settings.device_id == "gate-1"  # untouched keys still come from the file


def test_nested_env_override_merges_with_the_file_section(tmp_path, monkeypatch):
    path = _write(tmp_path, GOOD.replace("[[drivers]]", "[store]\nretention_hours = 5\n\n[[drivers]]"))
    monkeypatch.setenv("EDGE_STORE__MAX_BYTES", "2097152")
    settings = load_settings(path)
    assert settings.store.max_bytes == 2097152
    assert settings.store.retention_hours == 5


def test_bad_env_override_is_reported_with_its_key_path(tmp_path):
    path = _write(tmp_path, GOOD)
    code, lines = _check(path, env={"EDGE_STORE__MAX_BYTES": "huge"})
    assert code == 78
    assert len(lines) == 1 and "store.max_bytes (set by environment variable EDGE_STORE__MAX_BYTES): got 'huge'" in lines[0], lines


def test_a_misspelt_environment_variable_is_named_not_silently_ignored(tmp_path):
    """pydantic-settings ignores an EDGE_ variable that names no top-level setting: one underscore
    instead of two would look set and change nothing. `config check` (and `edge run`'s log) say so.
    (A wrong key inside a section, EDGE_MQTT__BROKER, is already an error naming the variable.)"""
    path = _write(tmp_path, GOOD)
    env = {"EDGE_STORE_MAX_BYTES": "1048576", "EDGE_NONSENSE": "1", "EDGE_CONFIG": str(path),
           "EDGE_STORE__MAX_BYTES": "2097152"}  # the last two are real
    code, lines = _check(path, env=env)
    assert code == 0, lines
    assert lines[1:] == [
        "warning: EDGE_NONSENSE is not a setting and is ignored (docs/configuration.md lists every variable)",
        "warning: EDGE_STORE_MAX_BYTES is not a setting and is ignored; did you mean EDGE_STORE__MAX_BYTES?"]
    result = CliRunner().invoke(cli, ["config", "check", str(path), "--json"], env={"EDGE_STORE__MAX_BYTES": "2097152"})
    assert json.loads(result.output)["warnings"] == []


def test_secret_values_are_not_echoed_in_errors(tmp_path):
    path = _write(tmp_path, GOOD.replace("[[drivers]]", '[mqtt]\npassword = "hunter2"\n\n[[drivers]]'))
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert "hunter2" not in str(exc.value)
    assert any("mqtt.password" in line for line in exc.value.lines)


def test_edge_config_env_names_the_file(tmp_path):
    path = _write(tmp_path, GOOD)
    result = CliRunner().invoke(cli, ["config", "check"], env={"EDGE_CONFIG": str(path)})
    assert result.exit_code == 0, result.output
    assert str(path) in result.output


def test_a_list_variable_that_is_not_json_is_a_config_error_naming_it(tmp_path):
    """pydantic-settings raises its own SettingsError here, which used to end `edge run` with a traceback."""
    path = _write(tmp_path, GOOD)
    code, lines = _check(path, env={"EDGE_MQTT__BROKERS": "mqtts://broker.example:8883"})
    assert code == 78 and len(lines) == 1, lines
    assert "mqtt.brokers (set by environment variable EDGE_MQTT__BROKERS): got 'mqtts://broker.example:8883'" \
        in lines[0], lines


def test_env_json_for_a_whole_table_merges_with_its_keys_and_the_file(tmp_path, monkeypatch):
    path = _write(tmp_path, GOOD.replace("[[drivers]]", "[store]\nretention_hours = 5\n\n[[drivers]]"))
    monkeypatch.setenv("EDGE_STORE", '{"max_bytes": 2097152, "batch_max": 9}')
    monkeypatch.setenv("edge_store__batch_max", "7")  # names are case-insensitive; the key wins over the JSON
    monkeypatch.setenv("EDGE_NO_SUCH_KEY", "1")  # naming no top-level key: ignored
    store = load_settings(path).store
    assert (store.max_bytes, store.batch_max, store.retention_hours) == (2097152, 7, 5)


def test_errors_from_environment_variables_name_the_variable(tmp_path):
    path = _write(tmp_path, GOOD)
    code, lines = _check(path, env={"EDGE_SITE": "bad site", "EDGE_STORE__MAX_BYTESS": "5"})
    assert code == 78 and len(lines) == 2, lines
    assert any("site (set by environment variable EDGE_SITE): got 'bad site'; expected 1-63 letters" in line
               for line in lines)
    assert any("store.max_bytess (set by environment variable EDGE_STORE__MAX_BYTESS): got '5'; unknown key"
               in line for line in lines)


@pytest.mark.parametrize("case", sorted(BAD))
def test_edge_run_gives_the_same_single_line_for_every_bad_config(tmp_path, case):
    """In-process for speed (the subprocess test above covers the real entry point)."""
    path = _write(tmp_path, BAD[case])
    result = CliRunner().invoke(cli, ["--config", str(path), "run"])
    assert result.exit_code == 78
    lines = [line for line in result.output.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith(f"config error: {path}: "), lines
    for fragment in EXPECTED_LINES[case]:
        assert fragment in lines[0]
    assert not (tmp_path / "state").exists()


def test_the_harness_writes_toml_that_reads_back_exactly():
    """edge.testing.dump_toml: tests and third parties write configs with it."""
    import tomllib

    from edge.testing.daemon import dump_toml

    doc = {"device_id": "d", "note": 'say "hi"\n\ttab \\ back ✓', "n": 3, "ratio": 0.5, "on": True,
           "paths": ["/a b", 'c"d'],
           "mqtt": {"brokers": ["mqtt://h:1"], "weird key": 1, "nested": {"a": [1, 2]}},
           "drivers": [{"name": "x", "kind": "sim.heartbeat", "opts": {"k.v": "w"}}, {"name": "y", "kind": "k"}]}
    assert tomllib.loads(dump_toml(doc)) == doc


def test_edge_run_logs_a_misspelt_environment_variable_at_start(edge_daemon, base_config):
    daemon = edge_daemon(base_config, env={"EDGE_STORE_MAX_BYTES": "1048576"})
    logged = [json.loads(line) for line in daemon.log_tail(20_000).splitlines() if line.startswith("{")]
    ignored = [e for e in logged if e["event"] == "environment_variable_ignored"]
    assert [e["detail"] for e in ignored] == [
        "EDGE_STORE_MAX_BYTES is not a setting and is ignored; did you mean EDGE_STORE__MAX_BYTES?"]
