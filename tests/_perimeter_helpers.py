"""Two lanes of real peers around a real daemon: libosdp PDs as readers, turnstile simulators."""

from __future__ import annotations

import json
import os
import queue
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import osdp

from drivers.readers._pin import pin_hash
from drivers.sim.osdp_pd import OsdpReaderSim
from drivers.sim.turnstile import TurnstileSim
from edge.signing import generate_keypair, load_private_key, sign
from tests._reader_helpers import KEY, key_file

SITE = "site-1"
PEOPLE = [f"P-{i}" for i in range(12)]


def card_of(person: str) -> tuple[int, int]:
    return 7, 1000 + int(person.split("-")[1])


def signed_directory(private_key, holders: list[dict], issued_at: str | None = None) -> dict:
    doc = {"type": "gate.directory", "site": SITE,
           "issued_at": issued_at or datetime.now(UTC).isoformat(), "holders": holders}
    return sign(doc, private_key)


class Perimeter:
    """Entry lane (reader + turnstile) and exit lane, the directory signed by central's key."""

    def __init__(self, tmp_path: Path, base_config: dict, *, steps: list[dict] | None = None,
                 pins: dict[str, str] | None = None, **lane_opts):
        self.tmp_path = tmp_path
        self.readers = {d: OsdpReaderSim(tmp_path / f"tty-reader-{d}", address=1, key=KEY,
                                            refresh_s=0.002).start()
                        for d in ("in", "out")}
        self.turnstiles = {d: TurnstileSim("rs485-bus", tmp_path / f"tty-ts-{d}", baudrate=115200,
                                           auto_pass=True, auto_pass_delay_s=0.01).start() for d in ("in", "out")}
        key, pub, _ = generate_keypair(tmp_path / "keys", "central")
        self.central_key = load_private_key(key)
        self.catalog_key, catalog_pub, _ = generate_keypair(tmp_path / "keys", "catalogs", roles=["catalog"])
        rkey = key_file(tmp_path)
        drivers = []
        for d in ("in", "out"):
            drivers.append({"name": f"reader-{d}", "kind": "reader.osdp", "port": str(self.readers[d].line.path),
                            "baudrate": 115200, "address": 1, "key_file": str(rkey),
                            "reconnect_max_s": 0.5, "refresh_interval_s": 0.002})
            drivers.append({"name": f"ts-{d}", "kind": "turnstile.serial", "codec": "rs485-bus",
                            "port": str(self.turnstiles[d].path), "baudrate": 115200, "reconnect_max_s": 0.5,
                            "poll_interval_s": 0.01})
        lanes = {f"lane-{d}": {"turnstile": f"ts-{d}", "reader": f"reader-{d}", "reader_direction": d,
                               "zones": ["outside", "inside"], **lane_opts,
                               "flows": [{"direction": d, "role": "card",
                                          "steps": steps or [{"kind": "card"}, {"kind": "grant", "timeout_s": 5}]}]}
                 for d in ("in", "out")}
        base_config.update(drivers=drivers, trust={"central_keys": [str(pub), str(catalog_pub)]},
                           gate={"zones": ["outside", "inside"], "lanes": lanes})
        self.config = base_config
        state = Path(base_config["state_dir"])
        state.mkdir(parents=True, exist_ok=True)
        holders = [{"id": p, "kind": "staff", "credentials": ["{}:{}".format(*card_of(p))]} for p in PEOPLE]
        for holder in holders:
            if holder["id"] in (pins or {}):
                salt = os.urandom(16)
                holder["pin"] = {"salt": salt.hex(), "hash": pin_hash(pins[holder["id"]], salt, 10_000).hex(),
                                 "iterations": 10_000}
        self.holders = holders
        (state / "gate-directory.json").write_text(json.dumps(signed_directory(self.central_key, holders)))

    def stop(self) -> None:
        for r in self.readers.values():
            try:
                r.stop()
            except RuntimeError:
                pass
        for t in self.turnstiles.values():
            t.stop()

    def present(self, direction: str, person: str | None = None, card: tuple[int, int] | None = None) -> None:
        self.readers[direction].card(*(card or card_of(person)))

    def leds(self, direction: str, timeout: float = 10.0) -> list[dict]:
        """LED/buzzer commands the reader got, waiting for at least one."""
        got = []
        q = self.readers[direction].commands
        try:
            got.append(q.get(timeout=timeout))
            while True:
                got.append(q.get(timeout=0.5))
        except queue.Empty:
            pass
        return got


def led_color(commands: list[dict]) -> int | None:
    leds = [c for c in commands if c["command"] == osdp.Command.LED]
    return leds[-1]["on_color"] if leds else None


def beeped(commands: list[dict]) -> bool:
    return any(c["command"] == osdp.Command.Buzzer for c in commands)


def gate_count(daemon) -> dict:
    out = daemon.cli("gate", "count", "--json")
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout)


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def publish_retained(broker, topic: str, doc: dict) -> None:
    """Central's retained document on ``topic`` (QoS 1, waits for the PUBACK)."""
    import uuid

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"central-{uuid.uuid4().hex[:6]}",
                         protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.publish(topic, json.dumps(doc).encode(), qos=1, retain=True).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def publish_directory(broker, doc: dict) -> None:
    publish_retained(broker, f"edge/v1/{SITE}/gate/directory", doc)


def card_decision(perimeter, state, card) -> dict:
    """Present ``card`` at the lane's entry reader; the gate's decision payload."""
    from tests._gate_helpers import last_seq, wait_event

    mark = last_seq(state)
    perimeter.present("in", card=card)
    return wait_event(state, "gate.decision", after=mark, what="the card's decision")["payload"]

