"""Red team: make the face kept for a visitor's exit someone else's, then walk out on their booking.

A visitor (V-1) is inside on booking BK-1; their face, verified at entry, is what the exit is
compared with. An accomplice enrolled as another visitor (V-2) is presented at the entry on
the same booking with their own subject, by one officer (`present` to a flow that checks the
face is one person). Their face verifies against their own template, but a booking's entry
face is never replaced: the lane is held, `gate.swap_suspected` is raised, nothing opens, and
at the exit the accomplice is still compared with the visitor's face. The visitor's own entry
(granted) and exit (granted) are the positive controls.
"""

from __future__ import annotations

import pytest

from drivers.sim.turnstile import TurnstileSim
from drivers.turnstile import messages as m
from tests._gate_helpers import OTHER, VISITOR, enroll, events, last_seq, show, wait_event


@pytest.fixture
def sim(tmp_path):
    sim = TurnstileSim("rs485-bus", tmp_path / "tty-lane1", baudrate=115200, auto_pass=True).start()
    yield sim
    sim.stop()


def _config(tmp_path, sim, base_config) -> dict:
    (tmp_path / "frames").mkdir(exist_ok=True)
    visitor = [{"kind": "verify", "timeout_s": 20}, {"kind": "grant", "timeout_s": 5}]
    base_config.update(
        drivers=[{"name": "lane1-ts", "kind": "turnstile.serial", "codec": "rs485-bus", "port": sim.path,
                  "baudrate": 115200, "reconnect_max_s": 0.5},
                 {"name": "lane1-face", "kind": "camera.face", "source": str(tmp_path / "frames"), "loop": True,
                  "liveness": "none", "max_fps": 10, "mode": "verify"}],
        gate={"hold_timeout_s": 60, "lanes": {"lane1": {
            "turnstile": "lane1-ts", "camera": "lane1-face",
            "flows": [{"direction": "in", "role": "visitor", "steps": visitor},
                      {"direction": "out", "role": "visitor", "steps": visitor}]}}})
    enroll(base_config["state_dir"])  # visitors V-1 (VISITOR's face) and V-2 (OTHER's face)
    return base_config


def _present(daemon, subject: str, direction: str) -> int:
    mark = last_seq(daemon.state_dir)
    out = daemon.cli("gate", "present", "lane1", "--booking", "BK-1", "--subject", subject, "--dir", direction,
                     "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return mark


def _decision(state, mark: int) -> dict:
    return wait_event(state, "gate.decision", after=mark, what="the gate's decision", timeout=60)["payload"]


def _held_as_swap(daemon, mark: int, reason: str, direction: str) -> None:
    state = daemon.state_dir
    swap = wait_event(state, "gate.swap_suspected", after=mark, what="the swap alarm", timeout=60)
    held = _decision(state, mark)
    assert (held["outcome"], held["reason"]) == ("hold", "swap_suspected"), held
    failed = {e["id"]: e for e in events(state, "biometric.*", mark)}[swap["payload"]["evidence"][0]]
    assert (failed["priority"], failed["payload"]["reason"], failed["payload"]["against"]) == \
        ("alarm", reason, "entry"), failed
    out = daemon.cli("gate", "override", "lane1", "--deny", "--dir", direction, "--reason", "officer checks id",
                     "--json")
    assert out.returncode == 0, out.stdout + out.stderr


def test_another_visitor_cannot_take_over_a_bookings_entry_face(tmp_path, sim, base_config, edge_daemon):
    daemon = edge_daemon(_config(tmp_path, sim, base_config))
    state = daemon.state_dir
    show(tmp_path, VISITOR)
    mark = _present(daemon, "V-1", "in")
    assert _decision(state, mark)["outcome"] == "grant"  # positive control: the visitor is in
    wait_event(state, "gate.passage", after=mark, what="the visitor through the turnstile")
    grants = len(sim.received(m.Grant))

    show(tmp_path, OTHER)  # the accomplice, enrolled as V-2, walks in on BK-1 under their own subject
    _held_as_swap(daemon, _present(daemon, "V-2", "in"), "entry_face_of_another_subject", "in")
    _held_as_swap(daemon, _present(daemon, "V-2", "out"), "not_the_entry_face", "out")  # and tries to leave
    assert len(sim.received(m.Grant)) == grants  # nothing opened for the accomplice

    show(tmp_path, VISITOR)
    mark = _present(daemon, "V-1", "out")
    assert _decision(state, mark)["outcome"] == "grant"  # positive control: the visitor's face still leaves
