"""Part of ``bench.py gate``: from an OSDP card read to the relay pulse that releases the turnstile.

A real daemon with a ``reader.osdp`` driver talking to libosdp's own PD on a pty
and a ``turnstile.modbus`` driver talking to pymodbus's server (both peers in
this process, so one monotonic clock times the chain): the PD submits a card
read, the lane's card flow grants (the gate policy's own authority), and the
chain ends when the server sees the release coil switched on.

Each stage alone: one OSDP card read between a libosdp CP (ticking as the
daemon's reader driver does) and PD on a pty (no daemon), the card submitted at
a random point of the poll cycle as in the chain; one durable store append
(``bench.py gate``'s own figure, passed in); and one ``grant`` handed to a
``turnstile.modbus`` driver run in this process (no daemon: built as the tests
build it, with the daemon's ``relay1`` settings, on the same pymodbus server),
from the call until the server sees the coil
switched on (the driver writes the coil before it emits ``turnstile.granted``,
so its events, not stored here, are outside that time). The OSDP read and the
grant are timed after the chain while the daemon still runs (the same load).
The daemon is not asked for that grant: a grant through the control socket is a
barrier command that needs a second operator, and the bench neither fakes one
nor switches the site's one-person override on. ``ratio`` = chain p50 / sum of
the stages alone.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

KEY = bytes(range(16))


def _osdp_read_alone(work: Path, runs: int) -> float:
    """Median ms from a PD's card read to the CP's event, libosdp on both ends, no daemon: the CP
    ticks as the daemon's ``reader.osdp`` driver does (its default ``refresh_interval_s``)."""
    import osdp

    from drivers.readers._channel import SerialChannel
    from drivers.readers.config import OsdpReaderConfig
    from drivers.readers.driver import _ControlPanel
    from drivers.sim.osdp_pd import OsdpReaderSim

    pd = OsdpReaderSim(work / "tty-alone", address=1, key=KEY).start()
    channel = SerialChannel(str(work / "tty-alone"), 115200)
    cp = _ControlPanel([osdp.PDInfo(1, channel, scbk=KEY, flags=[osdp.LibFlag.EnforceSecure])],
                       log_level=osdp.LogLevel.Error,
                       refresh_s=OsdpReaderConfig.model_fields["refresh_interval_s"].default)
    cp.start()
    try:
        if not cp.sc_wait(1, timeout=10):
            raise RuntimeError("libosdp CP and PD did not set up a secure channel")
        times = []
        for i in range(runs):
            # Not right after the CP took the last event (the worst phase of its polls, every time):
            # at a random point of the poll cycle, as a card comes to the daemon's reader.
            time.sleep(random.uniform(0.05, 0.3))
            started = time.monotonic()
            pd.card(1, i)
            while True:
                ev = cp.get_event(1, timeout=5)
                if ev is None:
                    raise RuntimeError("no card event from the PD")
                if ev.get("event") == osdp.Event.CardRead:
                    break
            times.append((time.monotonic() - started) * 1000)
        return statistics.median(times)
    finally:
        cp.stop()
        channel.close()
        pd.stop()


def _config(work: Path, modbus_port: int, key_file: Path, pub: Path) -> dict:
    return {
        "device_id": "bench-gate", "site": "bench", "role": "gate", "state_dir": str(work / "state"),
        "logging": {"level": "warning", "format": "json"}, "trust": {"central_keys": [str(pub)]},
        "drivers": [
            {"name": "reader1", "kind": "reader.osdp", "port": str(work / "tty-reader"), "baudrate": 115200,
             "address": 1, "key_file": str(key_file),
             "rate": 20, "burst": 60},  # a card every ~0.5 s for the whole run: above a person's pace
            {"name": "relay1", "kind": "turnstile.modbus", "host": "127.0.0.1", "tcp_port": modbus_port,
             "coils": {"release_in": 0, "release_out": 1}, "inputs": {"passage_in": 0, "passage_out": 1},
             "poll_interval_s": 0.02, "pulse_s": 0.2}],
        "gate": {"lanes": {"lane1": {"turnstile": "relay1", "reader": "reader1", "flows": [
            {"direction": "in", "role": "card", "steps": [{"kind": "card"}, {"kind": "grant", "timeout_s": 5}]}]}}},
    }


def _directory(state: Path, key_path: Path, people: int) -> None:
    from edge.signing import load_private_key, sign

    holders = [{"id": f"P-{i}", "kind": "staff", "credentials": [f"1:{i}"]} for i in range(people)]
    doc = sign({"type": "gate.directory", "site": "bench", "issued_at": datetime.now(UTC).isoformat(),
                "holders": holders}, load_private_key(key_path))
    state.mkdir(parents=True, exist_ok=True)
    (state / "gate-directory.json").write_text(json.dumps(doc))


def _wait_coil_on(sim, after: float, timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hit = next((t for t, coil, on in list(sim.coil_log) if coil == 0 and on and t > after), None)
        if hit is not None:
            return hit
        time.sleep(0.001)
    raise TimeoutError("the release coil was not switched on")


def _deny(state_dir: Path) -> None:
    """Close the lane's open grant through the control socket (``deny``: one operator may)."""
    from edge.commands.local import send

    reply = send(state_dir, "relay1", "deny", {}, "bench")
    if reply.get("status") != "ok":
        raise RuntimeError(f"deny on relay1 was not done: {reply}")


def _relay_grant_alone(sim, daemon_config: dict, runs: int) -> list[float]:
    """ms from ``grant`` handed to a ``turnstile.modbus`` driver in this process until ``sim`` sees the
    release coil on, one per run after a warm-up: the driver the daemon runs as ``relay1``, same settings."""
    import threading

    import structlog

    from drivers.io.config import ModbusTurnstileConfig
    from drivers.io.driver import ModbusTurnstileDriver
    from edge.driver import DriverContext

    settings = next(d for d in daemon_config["drivers"] if d["kind"] == "turnstile.modbus")
    online = threading.Event()

    def emit(type, payload, priority, source):
        if type == "turnstile.online":
            online.set()

    stopping = threading.Event()
    driver = ModbusTurnstileDriver(ModbusTurnstileConfig(**settings),
                                   DriverContext("relay-alone", emit, structlog.get_logger("bench"), stopping))
    thread = threading.Thread(target=driver.run, name="relay-alone", daemon=True)
    thread.start()
    try:
        if not online.wait(10):
            raise RuntimeError("the in-process turnstile.modbus driver did not reach the pymodbus server")
        times = []
        for _ in range(runs + 1):  # the first is a warm-up
            sent = time.monotonic()
            driver.handle("grant", {"direction": "in", "passes": 1, "timeout_s": 1})
            times.append((_wait_coil_on(sim, sent) - sent) * 1000)
            time.sleep(0.3)  # the pulse ends
            driver.handle("deny", {})  # the grant's window closes; nobody passes
        return times[1:]
    finally:
        stopping.set()
        driver._wake.set()
        thread.join(10)
        driver.close()


def run(runs: int, append_alone_ms: float) -> dict:
    from drivers.sim.modbus_io import ModbusIoSim
    from drivers.sim.osdp_pd import OsdpReaderSim
    from edge.signing import generate_keypair
    from edge.testing.daemon import DaemonProcess

    work = Path(tempfile.mkdtemp(prefix="gatebench-card-"))
    key_file = work / "reader.key"
    key_file.write_text(KEY.hex())
    key_file.chmod(0o600)
    key_path, pub, _ = generate_keypair(work / "keys", "central")
    pd = OsdpReaderSim(work / "tty-reader", address=1, key=KEY).start()
    relay = ModbusIoSim().start()
    config = _config(work, relay.port, key_file, pub)
    daemon = DaemonProcess(work / "daemon", config)
    _directory(daemon.state_dir, key_path, runs + 1)
    chains, grants = [], []
    try:
        daemon.start(timeout=120)
        deadline = time.monotonic() + 30
        while not _online(daemon) and time.monotonic() < deadline:
            time.sleep(0.05)
        for i in range(runs + 1):  # the first is a warm-up
            started = time.monotonic()
            pd.card(1, i)
            chains.append((_wait_coil_on(relay, started) - started) * 1000)
            time.sleep(0.3)  # the pulse ends; the grant's window is irrelevant (nobody passes)
            _deny(daemon.state_dir)
        chains = chains[1:]
        grants = _relay_grant_alone(relay, config, runs)
        osdp_ms = _osdp_read_alone(work, max(runs, 30))  # a random phase each: more reads for a steady median
    finally:
        daemon.stop()
        pd.stop()
        relay.stop()
        shutil.rmtree(work, ignore_errors=True)
    stages = {"osdp_card_read_ms": round(osdp_ms, 2), "store_append_ms": round(append_alone_ms, 2),
              "relay_grant_to_coil_ms": round(statistics.median(grants), 2)}
    total = sum(stages.values())
    p50 = statistics.median(chains)
    return {"card_to_pulse_ms_p50": round(p50, 2), "card_to_pulse_ms_max": round(max(chains), 2),
            "stages_alone_ms": stages, "stages_sum_ms": round(total, 2), "ratio": round(p50 / total, 3),
            "runs": runs}


def _online(daemon) -> bool:
    import sqlite3

    from edge.store import StoreReader

    if not (daemon.state_dir / "events.db").exists():
        return False
    reader = StoreReader(daemon.state_dir, readonly=True)
    try:
        return bool(reader.tail(5, type_glob="reader.online")) and bool(reader.tail(5, type_glob="turnstile.online"))
    except sqlite3.Error:
        return False
    finally:
        reader.close()
