"""Examples that cannot drift: every ``edge …`` line in README.md and docs/*.md runs here.

The site: a real mosquitto, a gate daemon (``lane1``: a serial turnstile on a simulated
controller over a pty), a tablet daemon with a course from the reference content
server, and a spare gate whose daemon is stopped (for ``run`` and ``outbox drain``).
Each example runs as a fresh ``edge`` process in the order the docs show; a non-zero
exit the doc does not announce fails the test with the doc's file and line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.events import make_event
from edge.store import Store
from edge.testing.daemon import DaemonProcess
from edge.testing.wait import holds_within, wait_for
from tests._docs_examples import collect, expand, long_running
from tests._learning_helpers import central_key, make_folder, start_server
from tests.conftest import FACES, REPO

SITE = "hmp-example"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXAMPLES = collect(DOCS)
_LONG_RUN_S = 4.0  # a long-running command passes when it is still running after this...
_STAYS_UP_S = 1.0  # ...or this long after it came up (past its first loop: tail --follow polls at 0.2 s)


@pytest.fixture(scope="module")
def site(tmp_path_factory, request):
    from drivers.sim.turnstile import TurnstileSim
    from edge.testing.broker import Mosquitto
    from services.messaging._crypto import generate_seal_keypair

    work = tmp_path_factory.mktemp("docs-site")
    broker = Mosquitto(work / "broker").start()
    key, pub, key_path = central_key(work)
    os.link(key_path, work / "central.key")  # the docs' `--key central.key`, relative to the cwd
    _, seal_pub = generate_seal_keypair(work / "keys", "central-seal")
    sim = TurnstileSim("rs485-bus", work / "tty-lane1").start()
    mqtt = {"brokers": [broker.uri], "backoff_min_s": 0.1, "backoff_max_s": 1.0}
    trust = {"central_keys": [str(pub)]}
    gate = DaemonProcess(work / "gate", {
        "device_id": "gate-north-1", "site": SITE, "role": "gate", "mqtt": mqtt, "trust": trust,
        "drivers": [{"name": "lane1", "kind": "turnstile.serial", "codec": "rs485-bus",
                     "port": str(sim.path), "baudrate": 115200}]}).start()
    content = make_folder(work, {"algebra-1": {"lesson1.pdf": 200_000}})
    server = start_server(broker, content, SITE, key)
    server.publish_catalog(version=1)
    tablet = DaemonProcess(work / "tablet", {
        "device_id": "tablet-a-101", "site": SITE, "role": "tablet", "mqtt": mqtt, "trust": trust,
        "messaging": {"central_seal_key": str(seal_pub)}, "drivers": []}).start()
    spare = DaemonProcess(work / "spare", {"device_id": "gate-north-2", "site": SITE, "role": "gate",
                                           "mqtt": mqtt, "trust": trust, "drivers": []})
    store = Store(spare.state_dir, device="gate-north-2", site=SITE)  # a backlog for `outbox drain`
    store.append_many([make_event(device="gate-north-2", site=SITE, type="sim.heartbeat", source="hb",
                                  payload={"n": i}) for i in range(50)])
    store.close()
    from drivers.turnstile import messages as m

    sim.wait_for(lambda: sim.received(m.ReadCounters), 20)  # the gate has made contact with lane1
    wait_for(lambda: _learning_catalog(tablet), 45, "the tablet to receive the course catalog")
    pairs = work / "pairs.csv"
    pairs.write_text("\n".join(f"{FACES / a},{FACES / b},{same}" for a, b, same in [
        ("obama_1.jpg", "obama_2.jpg", "yes"), ("biden_1.jpg", "biden_2.jpg", "yes"),
        ("obama_1.jpg", "biden_1.jpg", "no"), ("kit_harington_1.jpg", "rose_leslie_1.jpg", "no")]) + "\n")
    now = datetime.now(UTC)
    values = {
        "--timeout S": "5", "-n N": "20", "PATH": str(gate.config_path), "ID": "visitor-1",
        "--valid-from T": (now - timedelta(hours=1)).isoformat(),
        "--valid-until T": (now + timedelta(days=1)).isoformat(),
        "IMAGE...": str(FACES / "obama_1.jpg"), "--booking B": "booking-1", "PAIRS.csv": str(pairs),
        "--target-far F": "0.01", "--max-missing N": "1000000", "COURSE": "algebra-1", "FOLDER": str(content), "--broker URI": broker.uri,
        "--site S": SITE, "--chunk-size N": "65536", "--reason ...": "docs example", "--reason WHY": "docs example",
        "--reason TEXT": "docs example", "HOLDER": "staff-0042",
    }
    (work / "secure" / "keys").mkdir(parents=True, mode=0o700)  # the docs' `install -d` before `keys gen`
    from services.central.db import open_db

    central_db = open_db(str(work / "central.db"))  # what the docs' `edge central ingest` made: fleet.md reads it
    central_db.migrate()
    central_db.close()
    rewrites = {
        "mqtts://broker.example:8883 --ca-file ca.pem --cert-file ops.pem --key-file ops.key": broker.uri,
        "mqtt://broker:1883": broker.uri,
        "/secure/keys": str(work / "secure" / "keys"),
        "/etc/edge/edge.toml": str(spare.config_path),
    }
    yield {"work": work, "gate": gate, "tablet": tablet, "spare": spare, "values": values, "rewrites": rewrites}
    for daemon in (tablet, gate):
        daemon.stop()
    server.stop()
    sim.stop()
    broker.stop()


def _learning_catalog(tablet) -> bool:
    r = tablet.cli("learning", "status", "--json")
    return r.returncode == 0 and bool(json.loads(r.stdout).get("catalog_version"))


def _config_for(example, argv: list[str], site) -> Path:
    if "--config" in argv:
        return Path(argv[argv.index("--config") + 1])
    if argv and argv[0] in ("learning", "messages"):
        return site["tablet"].config_path
    if "daemon stopped" in example.comment:
        return site["spare"].config_path
    return site["gate"].config_path


def _run(argv: list[str], config: Path, cwd: Path) -> tuple[int | None, str]:
    """(exit code, or None for a long-running command still up after a few seconds; output).

    A few seconds: ``_LONG_RUN_S``, or ``_STAYS_UP_S`` after the command came up, whichever is
    first. Up means: ``edge run`` told systemd READY=1; any other long-running command printed
    its first output (the tail, the simulator's port, the serving line)."""
    # this checkout's edge, not whichever the interpreter has installed (a worktree's venv is shared)
    source = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "EDGE_CONFIG": str(config),
           "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "edge", *argv]
    if not long_running(argv):
        r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        return r.returncode, r.stdout + r.stderr
    with tempfile.TemporaryDirectory() as tmp:
        out_path, sock_path = Path(tmp) / "out", Path(tmp) / "notify.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(sock_path))
        notify.setblocking(False)
        daemon = [w for w in argv if w != "--config" and not w.endswith(".toml")][:1] == ["run"]
        if daemon:
            env["NOTIFY_SOCKET"] = str(sock_path)
        ready = []

        def up() -> bool:
            if not daemon:
                return out_path.stat().st_size > 0
            try:
                ready.append(notify.recv(4096))
            except BlockingIOError:
                pass
            return any(b"READY=1" in m for m in ready)

        with open(out_path, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            # up, exited, or not up yet but running after _LONG_RUN_S - _STAYS_UP_S; then still running?
            holds_within(lambda: proc.poll() is not None or up(), _LONG_RUN_S - _STAYS_UP_S)
            code = proc.wait(_STAYS_UP_S)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            notify.close()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        return code, out_path.read_text(errors="replace")


def test_the_docs_show_examples():
    assert len(EXAMPLES) >= 20, [str(e) for e in EXAMPLES]


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_every_documented_command_runs_as_written(example, site):
    for argv in expand(example.text, site["values"], site["rewrites"]):
        code, out = _run(argv, _config_for(example, argv, site), site["work"])
        assert code is None or code in example.allowed_exits, (
            f"{example.doc}:{example.line}: `edge {' '.join(argv)}` exited {code}, "
            f"which the doc does not announce:\n{out[-2000:]}")


def test_an_unannounced_failure_is_caught(site):
    """The check can fail: a command that exits 1 where the doc announces nothing, and one that
    names a placeholder the test has no value for."""
    from tests._docs_examples import Example

    bad = Example("made-up.md", 1, "edge drivers test no-such-lane", "")
    (argv,) = expand(bad.text, site["values"], site["rewrites"])
    code, out = _run(argv, _config_for(bad, argv, site), site["work"])
    assert code not in bad.allowed_exits and "no-such-lane" in out
    with pytest.raises(KeyError, match="no value for placeholder 'LANE'"):
        expand("edge gate status LANE", site["values"], site["rewrites"])
