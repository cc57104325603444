"""Red team: a wall clock pushed FORWARD (rogue NTP, an operator with ``date``) ends nothing early.

The time floor (test_clock_set_back) guards against a clock set back; against one pushed forward
the device also counts its persisted *uptime* (edge.uptime), and a span ends only when both
clocks say so. As in test_clock_set_back, each test gives a real daemon a past written by the
real classes on fake clocks, then starts it on the machine's clock: there the wall clock jumped
forward while the device's uptime barely moved. Checked:

- a visitor whose dose reached the limit 13 months ago by the wall clock, but a minute ago by
  uptime, is still held at the gate's dose check (and ``edge xray check`` refuses) — positive
  control: a visitor whose limit dose really is 13 months old (uptime agrees) is scanned and let
  through;
- a resident whose lockout ended an hour ago by the (pushed) wall clock, but began a second ago
  by uptime, is still locked out — positive controls: the same lockout lifts once its length of
  real time (uptime) has passed, and another resident's lockout, over by both clocks, is over.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from drivers.sim.turnstile import TurnstileSim
from drivers.xray.scan import build_scan
from edge.cli import cli
from edge.commands.seen import SeenIds
from edge.uptime import Clocks
from tests._gate_helpers import (
    OTHER,
    VISITOR,
    enroll,
    lane_config,
    last_seq,
    scan,
    show,
    wait_event,
)

PUSHED = timedelta(days=400)
LOCKOUT_S = 12.0  # how far the wall clock jumps ahead: past a 12-month dose window


class Past:
    """The device's history on fake clocks: ``run(s)`` is real time passing (both clocks move),
    ``push(d)`` the wall clock jumping ahead. It ends at the machine's clock (``push_to_now``),
    with the uptime persisted where the daemon reads it."""

    def __init__(self, state_dir: Path, ago: timedelta):
        self.t = {"wall": time.time() - ago.total_seconds(), "mono": 0.0}
        self.seen = SeenIds(state_dir, clock=lambda: self.t["wall"], mono=lambda: self.t["mono"])
        self.clocks = Clocks(now=lambda: self.t["wall"], uptime=self.seen.uptime)

    def run(self, seconds: float) -> None:
        self.t["wall"] += seconds
        self.t["mono"] += seconds

    def push_to_now(self) -> None:
        self.t["mono"] += 1.0
        self.t["wall"] = time.time()
        self.seen.close()


# -- the dose window -------------------------------------------------------------------------------


def _dose(ledger, subject: str, when: float, seq: int) -> None:
    from drivers.sim.xray import ScannerSim

    rec = ScannerSim(subject=subject, dose_usv=250.0).record(
        "clear", time=datetime.fromtimestamp(when, UTC).isoformat(), scan_id=f"OLD-{subject}")
    ledger.record_local(build_scan(rec, "scanner1").payload(format="json", record_sha256="0" * 64), seq)


def _present(daemon, booking: str, subject: str) -> int:
    mark = last_seq(daemon.state_dir)
    out = CliRunner().invoke(cli, ["--config", str(daemon.config_path), "gate", "present", "lane1",
                                   "--booking", booking, "--subject", subject, "--json"])
    assert out.exit_code == 0, out.output
    return mark


def test_a_dose_pushed_out_of_the_window_by_the_clock_still_counts(tmp_path, edge_daemon, base_config):
    from services.xray.ledger import DoseLedger
    from services.xray.settings import XraySettings

    sim = TurnstileSim("rs485-bus", tmp_path / "tty-lane1", baudrate=115200, auto_pass=True).start()
    try:
        base_config.update(**lane_config(tmp_path, sim, xray_timeout_s=20))
        enroll(base_config["state_dir"])
        daemon = edge_daemon(base_config, start=False)
        past = Past(daemon.state_dir, ago=2 * PUSHED)
        ledger = DoseLedger(daemon.state_dir, "site-1", XraySettings(), clocks=past.clocks)
        _dose(ledger, "V-2", past.t["wall"], 0)  # V-2 reached the limit...
        past.run(PUSHED.total_seconds())  # ...400 days ago, really (the device ran all that time)
        _dose(ledger, "V-1", past.t["wall"], 0)  # V-1 reached it a minute ago by uptime...
        ledger.close()
        past.push_to_now()  # ...and then the wall clock jumped 400 days ahead
        daemon.start()

        show(tmp_path, VISITOR)
        mark = _present(daemon, "BK-1", "V-1")
        held = wait_event(daemon.state_dir, "gate.decision", after=mark, what="the decision on V-1")
        assert (held["payload"]["outcome"], held["payload"]["reason"]) == ("hold", "dose_limit"), held
        check = wait_event(daemon.state_dir, "gate.dose_check", after=mark, what="V-1's dose check")["payload"]
        assert (check["allowed"], check["total_usv"]) == (False, 250.0), check
        cli_check = daemon.cli("xray", "check", "V-1", "--json")  # the CLI, beside the daemon, agrees
        assert cli_check.returncode == 1 and '"total_usv": 250.0' in cli_check.stdout, cli_check.stdout
        deny = CliRunner().invoke(cli, ["--config", str(daemon.config_path), "gate", "override", "lane1",
                                        "--deny", "--dir", "in", "--reason", "search by hand", "--json"])
        assert deny.exit_code == 0, deny.output

        # Positive control: V-2's dose is 400 days old by both clocks: out of the window, scanned, through.
        show(tmp_path, OTHER)
        mark = _present(daemon, "BK-2", "V-2")
        check = wait_event(daemon.state_dir, "gate.dose_check", after=mark, what="V-2's dose check")["payload"]
        assert (check["allowed"], check["total_usv"]) == (True, 0.0), check
        scan(tmp_path, "V-2", "clear")
        ok = wait_event(daemon.state_dir, "gate.decision", after=mark, what="V-2's grant")
        assert ok["payload"]["outcome"] == "grant", ok
    finally:
        sim.stop()


# -- resident PIN lockouts ---------------------------------------------------------------------------


def test_a_pin_lockout_holds_when_the_clock_is_pushed_forward(mosquitto, edge_daemon, tmp_path):
    from edge.localapi.client import call
    from edge.testing.wait import wait_for
    from services.learning._link import StandaloneLink
    from services.residents.guard import LoginGuard
    from services.residents.settings import ResidentSettings
    from tests._messaging_helpers import DIRECTORY_TOPIC, PINS, RESIDENT, Central, topic
    from tests._messaging_helpers import OTHER as NEIGHBOUR
    from tests.test_messaging_daemon import Tablet, _config

    central = Central(tmp_path)
    config = _config(mosquitto, central)
    # A short lockout: the positive control waits for it to lift.
    residents = {"max_failures": 3, "lockout_s": LOCKOUT_S, "tablet_free_failures": 50}
    config["residents"] = {"min_answer_s": 0.0, "backoff_base_s": 0.01, "backoff_max_s": 0.05, **residents}
    daemon = edge_daemon(config, start=False)
    central.provision(daemon)
    past = Past(daemon.state_dir, ago=timedelta(hours=2))
    (daemon.state_dir / "residents").mkdir(mode=0o700, exist_ok=True)
    guard = LoginGuard(ResidentSettings(**residents), daemon.state_dir / "residents" / "logins.json",
                       daemon.state_dir, clocks=past.clocks)
    for _ in range(3):
        guard.failure(guard.key(NEIGHBOUR))  # NEIGHBOUR locked out two hours ago: over by both clocks
    past.run(3600)
    for _ in range(3):
        guard.failure(guard.key(RESIDENT))  # RESIDENT locked out an hour ago by the wall clock...
    past.push_to_now()  # ...a second ago by uptime: the wall clock jumped an hour ahead since

    publisher = StandaloneLink(mosquitto.uri, client_id="central").start()
    try:
        publisher.publish(topic("contacts"), central.contacts(), retain=True)
        publisher.publish(DIRECTORY_TOPIC, central.directory(), retain=True)
        tablet = Tablet(daemon.start())
        tablet.ready_as = NEIGHBOUR  # positive control: NEIGHBOUR's lockout passed by both clocks; they log in
        wait_for(tablet.ready, what="directory applied, NEIGHBOUR logged in", timeout=45)

        def login(name: str, pin: str):
            return call(tablet.sock, "POST", "/v1/session", {"pseudonym": name, "pin": pin})

        status, headers, _ = login(RESIDENT, PINS[RESIDENT])
        assert status == 429, "the wall clock says the lockout ended an hour ago: by uptime it has not"
        assert 0 < int(headers["Retry-After"]) <= LOCKOUT_S
        # Positive control: once the lockout's length of real time has passed, the right PIN logs in.
        started = time.monotonic()
        wait_for(lambda: login(RESIDENT, PINS[RESIDENT])[0] == 201, what="RESIDENT's lockout lifted",
                 timeout=LOCKOUT_S + 5)
        assert time.monotonic() - started > 1.0
    finally:
        publisher.stop()
