"""A gate lane whose barrier is a sally port: card -> grant -> outer door, airlock, inner door -> counted.

A real daemon; libosdp's PD as the reader, pymodbus's server as the door module.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from drivers.sim.modbus_io import ModbusIoSim
from drivers.sim.osdp_pd import OsdpReaderSim
from edge.signing import generate_keypair, load_private_key, sign
from tests._gate_helpers import events, last_seq, wait_event
from tests._reader_helpers import KEY, key_file

OUTER, INNER = 0, 1  # coil and contact numbers of each door


def test_card_through_a_sally_port_one_door_at_a_time(tmp_path, base_config, edge_daemon):
    reader = OsdpReaderSim(tmp_path / "tty-reader", address=1, key=KEY).start()
    doors = ModbusIoSim().start()
    doors.set_input(OUTER, True)
    doors.set_input(INNER, True)
    key, pub, _ = generate_keypair(tmp_path / "keys", "central")
    base_config.update(
        trust={"central_keys": [str(pub)]},
        drivers=[{"name": "reader", "kind": "reader.osdp", "port": str(reader.line.path), "baudrate": 115200,
                  "address": 1, "key_file": str(key_file(tmp_path))},
                 {"name": "sally", "kind": "sallyport.modbus", "host": "127.0.0.1", "tcp_port": doors.port,
                  "outer": {"release": OUTER, "closed": OUTER}, "inner": {"release": INNER, "closed": INNER},
                  "release_s": 1.0, "poll_interval_s": 0.02}],
        gate={"zones": ["outside", "inside"], "lanes": {"sally": {
            "turnstile": "sally", "reader": "reader", "zones": ["outside", "inside"],
            "flows": [{"direction": "in", "role": "card",
                       "steps": [{"kind": "card"}, {"kind": "grant", "timeout_s": 30}]}]}}})
    doc = sign({"type": "gate.directory", "site": "site-1", "issued_at": datetime.now(UTC).isoformat(),
                "holders": [{"id": "P-1", "kind": "staff", "credentials": ["5:55"]}]}, load_private_key(key))
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / "gate-directory.json").write_text(json.dumps(doc))
    try:
        daemon = edge_daemon(base_config)
        state = daemon.state_dir
        wait_event(state, "reader.online", what="reader online")
        wait_event(state, "turnstile.online", what="sally port online")
        mark = last_seq(state)
        reader.card(5, 55)
        assert wait_event(state, "gate.decision", after=mark, what="grant")["payload"]["outcome"] == "grant"
        doors.wait_coil(OUTER, True)
        assert not doors.coils[INNER]
        doors.set_input(OUTER, False)  # the person opens the outer door and steps into the airlock
        assert doors.wait_reads(3)
        wait_event(state, "sallyport.door", lambda e: e["payload"] == {"address": 1, "door": "outer", "open": True},
                   after=mark, what="outer open")
        assert doors.wait_reads(5) and not doors.coils[INNER]  # the outer door is open: the inner stays shut
        doors.set_input(OUTER, True)  # the outer door closes behind them
        doors.wait_coil(INNER, True)
        doors.set_input(INNER, False)
        assert doors.wait_reads(3) and not doors.coils[OUTER]
        doors.set_input(INNER, True)
        moved = wait_event(state, "gate.occupancy", after=mark, what="P-1 counted inside")["payload"]
        assert (moved["person"], moved["to_zone"]) == ("P-1", "inside")
        passage = wait_event(state, "gate.passage", after=mark, what="the passage")["payload"]
        assert passage["passed"] is True
        assert not events(state, "sallyport.forced")
    finally:
        reader.stop()
        doors.stop()
