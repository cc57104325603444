"""Visitors end to end: the exit face against the entry face (swap), entry faces destroyed, sessions.

A real daemon with the face camera on a folder of real photos, the turnstile simulator on a pty.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from drivers.sim.turnstile import TurnstileSim
from drivers.turnstile import messages as m
from edge.commands.local import send
from edge.testing.wait import wait_for
from services.gate.contract import conforms
from tests._gate_helpers import OTHER, VISITOR, enroll, events, last_seq, show, wait_event


def _config(tmp_path, sim, base_config, **gate_extra) -> dict:
    frames = tmp_path / "frames"
    frames.mkdir(exist_ok=True)
    visitor = [{"kind": "verify", "timeout_s": 20}, {"kind": "grant", "timeout_s": 5}]
    base_config.update(
        drivers=[{"name": "lane1-ts", "kind": "turnstile.serial", "codec": "rs485-bus", "port": sim.path,
                  "baudrate": 115200, "reconnect_max_s": 0.5},
                 {"name": "lane1-face", "kind": "camera.face", "source": str(frames), "loop": True,
                  "liveness": "none", "max_fps": 10, "mode": "verify"}],
        gate={"hold_timeout_s": 60, "zones": ["outside", "visits"], **gate_extra, "lanes": {"lane1": {
            "turnstile": "lane1-ts", "camera": "lane1-face", "zones": ["outside", "visits"],
            "flows": [{"direction": "in", "role": "visitor", "steps": visitor},
                      {"direction": "out", "role": "visitor", "steps": visitor}]}}})
    enroll(base_config["state_dir"])
    return base_config


def _entry_faces(daemon) -> int:
    reply = send(daemon.state_dir, "lane1-face", "status", {}, timeout=30)
    return reply["result"]["lane"]["entry_templates"]


def _present(daemon, booking, subject, direction) -> int:
    mark = last_seq(daemon.state_dir)
    out = daemon.cli("gate", "present", "lane1", "--booking", booking, "--subject", subject, "--dir", direction,
                     "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return mark


@pytest.fixture
def sim(tmp_path):
    sim = TurnstileSim("rs485-bus", tmp_path / "tty-lane1", baudrate=115200, auto_pass=True).start()
    yield sim
    sim.stop()


def test_swap_at_the_exit_is_held_and_the_entry_face_is_destroyed_after_exit(tmp_path, sim, base_config,
                                                                              edge_daemon):
    daemon = edge_daemon(_config(tmp_path, sim, base_config), )
    state = daemon.state_dir
    show(tmp_path, VISITOR)
    mark = _present(daemon, "BK-1", "V-1", "in")
    d = wait_event(state, "gate.decision", after=mark, what="the visitor's entry", timeout=90)
    assert d["payload"]["outcome"] == "grant", d
    wait_event(state, "gate.occupancy", after=mark, what="the visitor counted in the visits hall")
    assert _entry_faces(daemon) == 1  # kept in the face worker's memory for the exit

    show(tmp_path, OTHER)  # someone else walks out on the visitor's booking
    grants = len(sim.received(m.Grant))
    mark = _present(daemon, "BK-1", "V-1", "out")
    swap = wait_event(state, "gate.swap_suspected", after=mark, what="the swap alarm", timeout=60)
    assert swap["priority"] == "alarm" and swap["payload"]["booking_id"] == "BK-1"
    held = wait_event(state, "gate.decision", after=mark, what="the hold")
    assert (held["payload"]["outcome"], held["payload"]["reason"]) == ("hold", "swap_suspected")
    evidence = {e["id"]: e for e in events(state, "biometric.*", mark)}
    failed = evidence[swap["payload"]["evidence"][0]]["payload"]
    assert (failed["reason"], failed["against"]) == ("not_the_entry_face", "entry")
    assert len(sim.received(m.Grant)) == grants  # nothing opened
    out = daemon.cli("gate", "override", "lane1", "--deny", "--dir", "out", "--reason", "officer checks id",
                     "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _entry_faces(daemon) == 1  # still inside: the entry face is kept

    show(tmp_path, VISITOR)  # the visitor themself
    mark = _present(daemon, "BK-1", "V-1", "out")
    d = wait_event(state, "gate.decision", after=mark, what="the visitor's exit", timeout=60)
    assert d["payload"]["outcome"] == "grant", d
    verified = [e for e in events(state, "biometric.verified", mark)][0]["payload"]
    assert verified["against"] == "entry"
    wait_event(state, "gate.occupancy", after=mark, what="the visitor counted out")
    _until_no_entry_faces(daemon)
    assert _entry_faces(daemon) == 0  # destroyed once they are out
    on_disk = [p.name for p in state.rglob("*") if "entr" in p.name.lower()]
    assert not on_disk  # never written anywhere
    for e in events(state, "gate.*"):
        conforms(e)


def test_session_end_lists_visitors_still_inside(tmp_path, sim, base_config, edge_daemon):
    now = datetime.now().astimezone()
    if (now + timedelta(seconds=_SESSION_ENDS_S[-1] + 60)).date() != now.date():
        pytest.skip("a session would end after midnight")
    # Sessions ending every few seconds, then further apart: the first one to end after the visitor
    # is counted in is the one the test checks, however long the start and the entry took on this
    # machine (a single session had to end late enough for the slowest case, ~10 s idle).
    sessions = [{"name": f"visits-{i}", "ends": (now + timedelta(seconds=s)).strftime("%H:%M:%S")}
                for i, s in enumerate(_SESSION_ENDS_S)]
    daemon = edge_daemon(_config(tmp_path, sim, base_config, visiting_sessions=sessions))
    state = daemon.state_dir
    show(tmp_path, VISITOR)
    mark = _present(daemon, "BK-9", "V-1", "in")
    assert wait_event(state, "gate.decision", after=mark, what="entry", timeout=90)["payload"]["outcome"] == "grant"
    counted = wait_event(state, "gate.occupancy", after=mark, what="counted in")
    for before in events(state, "gate.session_*", mark):  # sessions that ended before: nobody was inside
        if before["seq"] < counted["seq"]:
            assert (before["type"], before["payload"]["still_inside"]) == ("gate.session_closed", []), before
    alarm = wait_event(state, "gate.session_*", after=counted["seq"], what="a session's end", timeout=90)
    assert alarm["type"] == "gate.session_unbalanced" and alarm["priority"] == "alarm", alarm
    assert [p["person"] for p in alarm["payload"]["still_inside"]] == ["V-1"]
    _until_no_entry_faces(daemon)
    assert _entry_faces(daemon) == 0
    daemon.restart(timeout=90)  # a restart does not close the same session again
    mark = _present(daemon, "BK-10", "V-1", "out")  # the engine has been through its loop after this
    wait_event(state, "gate.decision", after=mark, what="a decision after the restart", timeout=90)
    ended = [e["payload"]["session"] for e in events(state, "gate.session_*")]
    assert ended.count(alarm["payload"]["session"]) == 1, ended
    assert len(ended) == len(set(ended)), ended  # (later sessions end once each, as their times come)


_SESSION_ENDS_S = (3, 4, 5, 6, 7, 8, 10, 12, 15, 19, 24, 32, 45, 60, 90)  # seconds from the test's start


def _until_no_entry_faces(daemon, timeout: float = 20.0) -> None:
    wait_for(lambda: _entry_faces(daemon) == 0, timeout, "no entry face kept", interval=0.1)


def test_booking_code_at_the_reader_starts_the_visitor_flow(tmp_path, sim, base_config, edge_daemon):
    import json
    from datetime import UTC

    from drivers.sim.osdp_pd import OsdpReaderSim
    from edge.signing import generate_keypair, load_private_key, sign
    from tests._reader_helpers import KEY, key_file

    reader = OsdpReaderSim(tmp_path / "tty-reader", address=1, key=KEY).start()
    try:
        config = _config(tmp_path, sim, base_config)
        key, pub, _ = generate_keypair(tmp_path / "keys", "central")
        config["trust"] = {"central_keys": [str(pub)]}
        config["drivers"].append({"name": "reader", "kind": "reader.osdp", "port": str(reader.line.path),
                                  "baudrate": 115200, "address": 1, "key_file": str(key_file(tmp_path)),
                                  "raw_as_text": True})
        config["gate"]["lanes"]["lane1"]["reader"] = "reader"
        doc = sign({"type": "gate.directory", "site": "site-1", "issued_at": datetime.now(UTC).isoformat(),
                    "holders": [{"id": "booking-42", "kind": "visitor", "credentials": ["BK-42"],
                                 "subject_id": "V-1"}]}, load_private_key(key))
        (tmp_path / "state" / "gate-directory.json").write_text(json.dumps(doc))
        daemon = edge_daemon(config)
        state = daemon.state_dir
        wait_event(state, "reader.online", what="the reader online")
        show(tmp_path, VISITOR)
        mark = last_seq(state)
        reader.code("BK-42")  # the QR code of the booking, at the reader
        d = wait_event(state, "gate.decision", after=mark, what="the visitor's entry", timeout=90)["payload"]
        assert (d["outcome"], d["role"], d["booking_id"], d["subject"], d["started_by"]) == \
            ("grant", "visitor", "BK-42", "V-1", "reader")
        wait_event(state, "gate.occupancy", after=mark, what="counted in")
        assert _entry_faces(daemon) == 1
        show(tmp_path, OTHER)
        mark = _present(daemon, "BK-42", "V-1", "out")
        wait_event(state, "gate.swap_suspected", after=mark, what="the swap at the exit", timeout=60)
    finally:
        reader.stop()
