"""No service thread dies quietly, and a safety component that is down fails closed.

A component thread that raises is a ``system.component_fault`` alarm, shows
``down`` while it waits for its restart, and is restarted. While the dose
ledger is down nobody may be scanned ("cannot decide"), in the daemon and in
``edge xray check``; while the command router is down, status and doctor say so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

from drivers.sim.xray import ScannerSim
from drivers.xray.scan import build_scan
from edge.supervisor import SupervisedThread
from edge.testing.daemon import dump_toml
from edge.testing.wait import wait_for
from tests._xray_helpers import XrayHarness


def test_a_component_thread_that_raises_is_an_alarm_then_restarts():
    alarms, calls, release = [], [], threading.Event()

    def target():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("poison message")
        release.wait(10)  # the second run is healthy until the test ends it

    thread = SupervisedThread(target, name="worker", emit=lambda *a: alarms.append(a), backoff_initial_s=0.05)
    thread.start()
    wait_for(lambda: len(calls) == 2, what="the restart")
    assert thread.is_alive() and thread.status()["status"] == "ok"
    (type_, payload, priority, source), = alarms
    assert (type_, priority, source) == ("system.component_fault", "alarm", "supervisor")
    assert payload["component"] == "worker" and payload["error_type"] == "ValueError" and payload["faults"] == 1
    thread.stop()
    release.set()
    thread.join(5)
    assert not thread.is_alive()


def _scan_payload(sim, dose):
    return build_scan(sim.record("clear", dose_usv=dose), "t").payload(format="json", record_sha256="0" * 64)


def test_dose_check_cannot_decide_while_the_ledger_is_down(tmp_path):
    h = XrayHarness(tmp_path, limit_usv=10.0, warning_usv=5.0)
    try:
        service, sim = h.service, ScannerSim(dose_usv=3.0)
        h.emit("xray.scan", _scan_payload(sim, 3.0), "normal", "xr")
        assert service.wait_idle() and service.check("A1234BC").allowed
        service._thread._initial = 5.0  # a long back-off: the window in which we look at it

        real, failed = service.ledger.record_local, threading.Event()

        def broken(*args, **kwargs):
            failed.set()
            raise RuntimeError("disk I/O error")
        service.ledger.record_local = broken
        h.emit("xray.scan", _scan_payload(sim, 3.0), "normal", "xr")
        assert failed.wait(10)
        wait_for(lambda: service.status()["status"] == "down", what="the ledger marked down")
        answer = service.check("A1234BC")
        assert not answer.allowed and not answer.decided and answer.reason.startswith("cannot decide")
        faults = h.wait(lambda: h.events("system.component_fault"), what="the fault alarm")
        assert faults[0]["priority"] == "alarm" and faults[0]["payload"]["component"] == "xray-ledger"

        service.ledger.record_local = real  # positive control: it restarts and counts the missed scan
        h.wait(lambda: service.status()["status"] == "ok", 20, "the ledger restarted")
        assert service.wait_idle()
        answer = service.check("A1234BC")
        assert answer.decided and answer.allowed and answer.total_usv == 6.0
    finally:
        h.close()


def _cli(config, *args):
    return subprocess.run([sys.executable, "-m", "edge", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_check_and_doctor_report_components_the_daemon_says_are_down(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "edge.toml"
    config.write_text(dump_toml({"device_id": "dev-1", "site": "site-1", "role": "gate", "state_dir": str(state)}))
    status = {"running": True, "pid": os.getpid(), "components": {
        "xray": {"status": "down", "faults": 1}, "commands": {"status": "down", "last_error": "ValueError: x"}}}
    (state / "status.json").write_text(json.dumps(status))  # what a daemon writes; this process is alive

    check = _cli(config, "xray", "check", "A1234BC")
    assert check.returncode == 1 and "cannot decide" in check.stderr
    doctor = _cli(config, "doctor", "--only", "components", "--json")
    down = [c for c in json.loads(doctor.stdout)["checks"] if not c["ok"]]
    assert doctor.returncode != 0 and {c["target"] for c in down} == {"xray", "commands"}

    status["components"] = {"xray": {"status": "ok"}, "commands": {"status": "ok"}}  # positive control
    (state / "status.json").write_text(json.dumps(status))
    from services.xray.ledger import DoseLedger
    from services.xray.settings import XraySettings

    DoseLedger(state, "site-1", XraySettings()).close()  # the running daemon's (empty) ledger
    check = _cli(config, "xray", "check", "A1234BC", "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["decided"] is True
    assert _cli(config, "doctor", "--only", "components").returncode == 0


def test_the_uplink_sender_restarts_after_a_fault_and_delivers_everything(base_config, mosquitto, mqtt_collector):
    from edge.config import Settings
    from edge.events import make_event
    from edge.mqtt import MqttLink
    from edge.store import Store

    settings = Settings(**{**base_config, "mqtt": {"brokers": [mosquitto.uri], "backoff_min_s": 0.05,
                                                   "backoff_max_s": 0.5}})
    store = Store(settings.state_dir, device="dev-1", site="site-1", settings=settings.store)
    collector = mqtt_collector(mosquitto, "edge/v1/site-1/dev-1/events/#")
    link = MqttLink(settings, store, device_state=False)
    uplink, real_fill, failed = link.uplink, link.uplink._fill, threading.Event()
    uplink._thread._initial = 1.0

    def broken_fill():
        if not failed.is_set():
            failed.set()
            raise RuntimeError("a bug in the sender")
        real_fill()
    uplink._fill = broken_fill
    try:
        link.start()
        assert link.wait_connected(10)
        store.append(make_event(device="dev-1", site="site-1", type="test.one", source="t", payload={"n": 1}))
        assert failed.wait(10)
        wait_for(lambda: link.status().get("status") == "down", what="the uplink shown down")
        assert "mqtt-uplink" in link.status()["down"]
        # Positive control: it restarts, re-reads what was pending, and everything arrives, with the alarm.
        collector.wait_for(lambda c: c.events("test.one") and c.events("system.component_fault"), 20,
                           "the event and the fault alarm delivered")
        assert link.status().get("status") != "down"
    finally:
        link.stop()
        store.close()
