"""A tablet in service stays under 50 MB resident (issue 24): what it must not load.

The daemon runs as the footprint benchmark runs it (scripts/benchmarks/footprint.py): role
tablet, learning, messaging, resident login, the local API, an uplink to a real mosquitto,
and one signed command handled. ``PYTHONVERBOSE`` makes it log every module it loads, for
its whole life (an import that fails, as of a hidden module, is not listed). Each module
below was measured resident on a tablet (the figures: what each cost when it went) and made
lazy or unnecessary; the RSS figure itself is the benchmark's (docs/performance.md).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge import signing
from edge.commands.build import build_command
from edge.commands.publish import publish_command
from edge.store import StoreReader
from edge.testing.broker import Mosquitto
from edge.testing.daemon import DaemonProcess
from edge.testing.wait import wait_for

DEVICE, SITE = "tablet-foot-1", "site-1"

NOT_LOADED = {
    "click": "plain `edge run` takes edge.cli._run, not the click group (1.1 MB)",
    "rich": "structlog loads with rich hidden (edge.cli._run): devices do not install it (3.6 MB)",
    "services.gate.engine": "a tablet asks the gate's component factory (services.gate) and hears none",
    "services.xray.service": "a tablet asks the x-ray component factory (services.xray) and hears none",
    "cryptography": "signatures verify with libsodium (edge.signing); cryptography is ~9 MB",
}


@pytest.fixture(scope="module")
def tablet_imports(tmp_path_factory) -> set[str]:
    from services.messaging._crypto import generate_seal_keypair

    root = tmp_path_factory.mktemp("footprint")
    _, central_pub, _ = signing.generate_keypair(root / "keys", "central")
    _, seal_pub = generate_seal_keypair(root / "keys", "central-seal")
    broker = Mosquitto(root / "broker").start()
    config = {"device_id": DEVICE, "site": SITE, "role": "tablet", "state_dir": str(root / "state"),
              "logging": {"level": "info", "format": "json"}, "mqtt": {"brokers": [broker.uri]},
              "trust": {"central_keys": [str(central_pub)]}, "messaging": {"central_seal_key": str(seal_pub)},
              "drivers": [{"name": "heartbeat", "kind": "sim.heartbeat", "rate": 5.0}]}
    daemon = DaemonProcess(root / "daemon", config, env={"PYTHONVERBOSE": "1"})
    try:
        daemon.start(timeout=60)
        key = signing.load_private_key(root / "keys" / "central.key")
        doc = build_command(target="heartbeat", name="ping", device=DEVICE, site=SITE, keys=[key])
        publish_command(broker.uri, SITE, DEVICE, doc)
        wait_for(lambda: _has_result(daemon, doc["id"]), what=f"command.result of {doc['id']}")
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()
        broker.stop(kill=True)
    return {line.split("'")[1] for line in daemon.log_path.read_text(errors="replace").splitlines()
            if line.startswith("import '")}


def _has_result(daemon: DaemonProcess, command_id: str) -> bool:
    reader = StoreReader(daemon.state_dir)
    try:
        return any(command_id.encode() in bytes(row[1]) for row in reader.tail(20, type_glob="command.result"))
    finally:
        reader.close()


def test_the_import_log_lists_what_a_tablet_does_load(tablet_imports):
    """Positive control: the log is read, and it holds the tablet's own parts."""
    for module in ("structlog", "pydantic", "paho.mqtt.client", "nacl.signing", "edge.commands.router",
                   "services.learning.component", "services.messaging.component",
                   "services.residents.component", "edge.localapi.server"):
        assert module in tablet_imports, module


@pytest.mark.parametrize("module", sorted(NOT_LOADED))
def test_a_tablet_in_service_does_not_load(tablet_imports, module):
    assert module not in tablet_imports, NOT_LOADED[module]


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_structlog_alone_would_load_rich():
    """Positive control for the next test: in this environment, a plain import pays for it."""
    pytest.importorskip("rich", reason="rich is not installed here: nothing to hide")
    assert _run("import sys, structlog; print('rich' in sys.modules)") == "True"


def test_the_daemon_imports_structlog_without_rich_and_it_still_logs():
    pytest.importorskip("rich", reason="rich is not installed here: nothing to hide")
    code = """
import io, json, sys
import edge.logs  # imports structlog lean, before anything else does
import structlog
from edge import logs
print("rich" in sys.modules)
out = io.StringIO()
logs.configure("info", "json", stream=out)
structlog.get_logger("t").info("hello", password="x")
print(json.loads(out.getvalue())["password"])
logs.configure("info", "console", stream=out)
try:
    raise ValueError("boom")
except ValueError:
    structlog.get_logger("t").exception("failed")
print("ValueError: boom" in out.getvalue())
import rich  # anyone else gets the real module
print(rich.__name__)
"""
    assert _run(code).splitlines() == ["False", "[redacted]", "True", "rich"]
