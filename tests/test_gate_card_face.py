"""Staff two-factor end to end: a card from the directory, then the face of that card's holder.

libosdp's PD as the reader, the face camera on a folder of real photos, the turnstile simulator.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import osdp
import pytest

from drivers.sim.osdp_pd import OsdpReaderSim
from drivers.sim.turnstile import TurnstileSim
from edge.signing import generate_keypair, load_private_key, sign
from tests._gate_helpers import STAFF, VISITOR, enroll, last_seq, show, wait_event
from tests._perimeter_helpers import led_color
from tests._reader_helpers import KEY, key_file


@pytest.fixture
def lane(tmp_path, base_config, edge_daemon):
    reader = OsdpReaderSim(tmp_path / "tty-reader", address=1, key=KEY).start()
    sim = TurnstileSim("rs485-bus", tmp_path / "tty-ts", baudrate=115200, auto_pass=True).start()
    frames = tmp_path / "frames"
    frames.mkdir()
    key, pub, _ = generate_keypair(tmp_path / "keys", "central")
    base_config.update(
        trust={"central_keys": [str(pub)]},
        drivers=[{"name": "ts", "kind": "turnstile.serial", "codec": "rs485-bus", "port": sim.path,
                  "baudrate": 115200},
                 {"name": "reader", "kind": "reader.osdp", "port": str(reader.line.path), "baudrate": 115200,
                  "address": 1, "key_file": str(key_file(tmp_path))},
                 {"name": "face", "kind": "camera.face", "source": str(frames), "loop": True,
                  "liveness": "none", "max_fps": 10, "mode": "verify"}],
        gate={"lanes": {"staff": {"turnstile": "ts", "reader": "reader", "camera": "face", "flows": [
            {"direction": "in", "role": "card", "steps": [{"kind": "card"}, {"kind": "face", "timeout_s": 20},
                                                          {"kind": "grant", "timeout_s": 5}]}]}}})
    state = base_config["state_dir"]
    enroll(state)  # S-1 is obama's face
    doc = sign({"type": "gate.directory", "site": "site-1", "issued_at": datetime.now(UTC).isoformat(),
                "holders": [{"id": "staff-7", "kind": "staff", "credentials": ["3:77"], "subject_id": "S-1"}]},
               load_private_key(key))
    (tmp_path / "state" / "gate-directory.json").write_text(json.dumps(doc))
    daemon = edge_daemon(base_config)
    wait_event(daemon.state_dir, "reader.online", what="the reader online")
    yield daemon, reader, tmp_path
    reader.stop()
    sim.stop()


def test_card_and_the_holders_face(lane):
    daemon, reader, tmp_path = lane
    state = daemon.state_dir
    show(tmp_path, VISITOR)  # someone else holds staff-7's card up
    mark = last_seq(state)
    reader.card(3, 77)
    d = wait_event(state, "gate.decision", after=mark, what="the borrowed card", timeout=90)["payload"]
    assert (d["outcome"], d["reason"], d["subject"]) == ("deny", "face_not_verified", "S-1")
    assert [s["kind"] for s in d["steps"]] == ["card", "face"]
    _led(reader, osdp.CommandLEDColor.Red)

    show(tmp_path, STAFF)  # the holder themself
    mark = last_seq(state)
    reader.card(3, 77)
    d = wait_event(state, "gate.decision", after=mark, what="the holder's grant", timeout=60)["payload"]
    assert d["outcome"] == "grant" and [s["kind"] for s in d["steps"]] == ["card", "face", "grant"]
    _led(reader, osdp.CommandLEDColor.Green)


def _led(reader, color, timeout: float = 10.0) -> None:
    """The reader's LED is set to ``color`` (other commands, e.g. the buzzer, may come between)."""
    import queue
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            cmd = reader.commands.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if led_color([cmd]) is not None:
            assert led_color([cmd]) == color, cmd
            return
    raise AssertionError(f"the reader's LED was not set to {color}")
