"""A driver family from outside this tree plugs in through entry points alone.

tests/data/example_driver is a separate package (a door bell) that a third party could ship.
Installed beside edge, with no edit to edge's own files, its driver kind, its command, its
events, its CLI group and its payload schema in the MQTT contract all appear.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> str:
    target, source = tmp_path_factory.mktemp("plugin-site"), tmp_path_factory.mktemp("plugin-src") / "src"
    shutil.copytree(REPO / "tests" / "data" / "example_driver", source)  # the build writes beside it
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, timeout=180)
    return str(target)


def _env(plugin_path: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [plugin_path, os.environ.get("PYTHONPATH")]))}


def _python(plugin_path: str, code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], env=_env(plugin_path), capture_output=True, text=True,
                          check=True, timeout=60).stdout


def test_its_kind_and_cli_group_appear(plugin_path, tmp_path):
    edge = [sys.executable, "-m", "edge"]
    listed = subprocess.run(edge + ["drivers", "list", "--json"], env=_env(plugin_path), capture_output=True,
                            text=True, timeout=60)
    assert "example.bell" in json.loads(listed.stdout)["kinds"]
    hello = subprocess.run(edge + ["bell", "hello"], env=_env(plugin_path), capture_output=True, text=True,
                           timeout=60)
    assert hello.returncode == 0 and hello.stdout.strip() == "the bell plug-in answers", hello.stderr
    # Without the package nothing of it is there: the core knows no driver by name.
    bare = subprocess.run(edge + ["bell", "hello"], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "No such command 'bell'" in bare.stderr


def test_its_payload_schema_is_in_the_mqtt_contract(plugin_path):
    out = _python(plugin_path, "import json; from edge.asyncapi import build; print(json.dumps(build()))")
    schemas = json.dumps(json.loads(out)["components"])
    assert "RangPayload" in schemas and "How many times the bell rang." in schemas


def test_its_command_runs_in_the_daemon_and_its_events_are_stored(plugin_path, edge_daemon, base_config):
    base_config["drivers"] = [{"name": "bell1", "kind": "example.bell", "loudness": 5}]
    daemon = edge_daemon(base_config, env={"PYTHONPATH": plugin_path})
    rang = daemon.cli("cmd", "local", "bell1", "ring", "--arg", "times=2", "--json")
    assert rang.returncode == 0, rang.stdout + rang.stderr
    assert json.loads(rang.stdout)["result"]["rang"] == 2
    tail = daemon.cli("events", "tail", "--type", "example.*", "--json")
    events = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [(e["type"], e["payload"]) for e in events] == [("example.rang", {"times": 2})]
    bad = daemon.cli("config", "check")
    assert bad.returncode == 0, bad.stdout + bad.stderr  # its own options validate through its model
