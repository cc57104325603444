"""The real daemon on a Modbus lane or a serial perimeter, set up for flood tests: each
lane's flood report every ``WINDOW_S`` so a flood's end comes within a test's time."""

from __future__ import annotations

from contextlib import contextmanager

from drivers.sim.modbus_io import ModbusIoSim
from tests._gate_helpers import wait_event
from tests._perimeter_helpers import Perimeter

WINDOW_S = 2.0


@contextmanager
def modbus_flood_lane(base_config, edge_daemon, inputs: dict):
    """A ``turnstile.modbus`` lane on pymodbus's server, with these extra ``inputs`` wired."""
    module = ModbusIoSim().start()
    try:
        base_config.update(drivers=[{
            "name": "lane1-ts", "kind": "turnstile.modbus", "host": "127.0.0.1", "tcp_port": module.port,
            "coils": {"release_in": 0, "release_out": 1},
            "inputs": {"passage_in": 0, "passage_out": 1, **inputs},
            "poll_interval_s": 0.02, "reply_timeout_s": 0.3, "retries": 1, "flood_report_s": WINDOW_S,
            "reconnect_initial_s": 0.05, "reconnect_max_s": 0.3}])
        daemon = edge_daemon(base_config)
        wait_event(daemon.state_dir, "turnstile.online", what="the lane online")
        yield module, daemon
    finally:
        module.stop()


@contextmanager
def serial_flood_site(tmp_path, base_config, edge_daemon, ready_type: str, ready_source: str,
                      settings: dict[str, dict] | None = None):
    """The perimeter's serial turnstiles and readers, started once ``ready_source`` says ``ready_type``;
    ``settings`` by driver kind (by default the serial turnstiles' flood report every ``WINDOW_S``)."""
    p = Perimeter(tmp_path, base_config)
    try:
        settings = settings or {"turnstile.serial": {"flood_report_s": WINDOW_S}}
        for d in p.config["drivers"]:
            d.update(settings.get(d["kind"], {}))
        daemon = edge_daemon(p.config)
        wait_event(daemon.state_dir, ready_type, lambda e: e["source"] == ready_source,
                   what=f"{ready_source} online")
        yield p, daemon
    finally:
        p.stop()
