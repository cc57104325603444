"""[gate] is validated at start-up: every problem names its key path, and `edge run` exits 78."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge.config import load_settings
from edge.errors import ConfigError
from edge.testing.daemon import dump_toml

DRIVERS = [{"name": "ts", "kind": "turnstile.serial", "codec": "rs485-bus", "port": "/dev/null"},
           {"name": "cam", "kind": "camera.face", "source": "/dev/video0"},
           {"name": "xr", "kind": "xray.folder", "path": "/srv/scanner"}]
VISITOR = {"direction": "in", "role": "visitor", "steps": [
    {"kind": "verify", "timeout_s": 20}, {"kind": "dose_check", "on_fail": "hold"},
    {"kind": "xray", "timeout_s": 120, "on_fail": "hold"}, {"kind": "grant", "passes": 1, "timeout_s": 10}]}


def _write(tmp_path, lane: dict, drivers=DRIVERS) -> str:
    path = tmp_path / "edge.toml"
    path.write_text(dump_toml({"device_id": "d", "site": "s", "role": "gate", "state_dir": str(tmp_path / "st"),
                               "drivers": drivers, "gate": {"lanes": {"lane1": lane}}}))
    return str(path)


def _errors(tmp_path, lane: dict, drivers=DRIVERS) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, lane, drivers), check_drivers=False)
    return "\n".join(info.value.lines)


def _lane(*flows, **extra) -> dict:
    return {"turnstile": "ts", "camera": "cam", "scanners": ["xr"], "flows": list(flows), **extra}


def test_the_example_flows_load(tmp_path):
    settings = load_settings(_write(tmp_path, _lane(VISITOR, {"direction": "out", "role": "any",
                                                              "steps": [{"kind": "grant"}]})), check_drivers=False)
    flow = settings.gate.lanes["lane1"].flow("in", "visitor")
    assert [s.kind for s in flow.steps] == ["verify", "dose_check", "xray", "grant"]
    assert flow.steps[2].on_fail == "hold" and flow.steps[2].on_timeout == "deny"


def test_an_unknown_step_kind_names_its_key_path(tmp_path):
    bad = {**VISITOR, "steps": [{"kind": "verify"}, {"kind": "retina"}, {"kind": "grant"}]}
    assert "gate.lanes.lane1.flows[0].steps[1].kind: got 'retina'" in _errors(tmp_path, _lane(bad))


@pytest.mark.parametrize(("steps", "role", "problem"), [
    (["verify", "xray", "dose_check", "grant"], "visitor", "'dose_check' must come before 'xray'"),
    (["verify"], "visitor", "the last step, and only the last, must be 'grant'"),
    (["grant", "verify", "grant"], "visitor", "the last step, and only the last, must be 'grant'"),
    (["dose_check", "grant"], "visitor", "a visitor flow needs a 'verify' step"),
    (["grant"], "staff", "a staff flow starts with 'identify'"),
    (["verify", "grant"], "any", "'verify' needs a booking"),
    (["xray", "grant"], "any", "not possible for role 'any'"),
])
def test_impossible_flows_are_refused_with_the_reason(tmp_path, steps, role, problem):
    flow = {"direction": "in", "role": role, "steps": [{"kind": k} for k in steps]}
    errors = _errors(tmp_path, _lane(flow))
    assert "gate.lanes.lane1.flows[0]" in errors and problem in errors


def test_unknown_or_wrong_kind_drivers_and_missing_lane_parts_are_named(tmp_path):
    errors = _errors(tmp_path, _lane(VISITOR, turnstile="ts9", scanners=["cam"]))
    assert "lanes.lane1.turnstile: no driver named 'ts9'" in errors
    assert "lanes.lane1.scanners[0]: driver 'cam' is a camera.face, expected xray.folder or xray.stream" in errors
    errors = _errors(tmp_path, {"turnstile": "ts", "flows": [VISITOR]})
    assert "flows[0]: verify/identify need the lane's 'camera'" in errors
    assert "flows[0]: xray/dose_check need the lane's 'scanners'" in errors
    assert "a second flow for in/visitor" in _errors(tmp_path, _lane(VISITOR, VISITOR))


def test_edge_run_exits_78_on_a_bad_gate_policy(tmp_path):
    bad = {**VISITOR, "steps": [{"kind": "verify"}, {"kind": "grant", "timeout_s": 600}]}
    out = subprocess.run([sys.executable, "-m", "edge", "--config", _write(tmp_path, _lane(bad)), "run"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 78, out.stderr
    assert "gate.lanes.lane1.flows[0].steps[1]" in out.stderr and "1..255 seconds" in out.stderr


def test_the_shipped_example_has_a_working_lane():
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "config" / "gate.example.toml"
    lane = load_settings(example, check_files=False).gate.lanes["lane1"]
    assert [s.kind for s in lane.flow("in", "visitor").steps] == ["verify", "dose_check", "xray", "grant"]
    assert lane.flow("in", "staff") is not None and lane.flow("out", "any") is not None


def test_gate_cli_without_a_running_daemon_or_without_lanes_says_what_to_do(tmp_path):
    from click.testing import CliRunner

    from edge.cli import cli

    config = _write(tmp_path, _lane(VISITOR))
    out = CliRunner().invoke(cli, ["--config", config, "gate", "status", "--json"])
    assert out.exit_code == 69 and "is the daemon running?" in json.loads(out.stdout)["error"]
    bare = tmp_path / "bare.toml"
    bare.write_text(dump_toml({"device_id": "d", "site": "s", "role": "gate", "state_dir": str(tmp_path / "st")}))
    out = CliRunner().invoke(cli, ["--config", str(bare), "gate", "mode", "lockdown", "--reason", "drill"])
    assert out.exit_code == 1 and "no [gate.lanes]" in out.output


@pytest.mark.parametrize("flags", [[], ["--deny", "--grant"], ["--grant", "--deny"]])
def test_gate_override_takes_exactly_one_of_grant_and_deny(tmp_path, flags):
    """An officer who types both is asked which, never given the last one typed (a grant)."""
    from click.testing import CliRunner

    from edge.cli import cli

    config = _write(tmp_path, _lane(VISITOR))
    out = CliRunner().invoke(cli, ["--config", config, "gate", "override", "lane1", *flags,
                                   "--reason", "searched", "--json"])
    assert out.exit_code == 2, out.output
    assert json.loads(out.stdout)["error"] == "say either --grant or --deny (exactly one)"
