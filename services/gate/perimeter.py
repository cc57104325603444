"""Readers, credentials, zones: the parts of the gate policy that know who a person is.

The engine calls in at fixed points (a card read, a PIN typed, an approach
begun, decided or through the turnstile); this module answers with the
directory's holder, the reader's feedback, the anti-passback verdict and the
occupancy move. Like the engine it runs on the engine thread only, and it
talks to drivers only through the engine's ``send`` (the command router).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog

from edge.errors import StoreError
from services.gate.approach import Approach
from services.gate.directory import TRUST_DOCUMENT, Directory, DocumentRejected
from services.gate.occupancy import EVENT as OCCUPANCY
from services.gate.occupancy import Occupancy
from services.gate.pinlock import PinLockouts

log = structlog.get_logger("edge.gate")
READER_EVENTS = frozenset({"reader.card", "reader.pin_entered"})
TOPIC = "edge/v1/{site}/gate/directory"
_FEEDBACK = {"grant": "grant", "deny": "deny", "hold": "hold"}


class Perimeter:
    def __init__(self, engine, daemon):
        from edge.trust import daemon_keys_for

        s = daemon.settings
        self.engine = engine
        self._daemon = daemon
        # only anchors holding the 'directory' role (edge.trust.DOCUMENT_ROLES), revocations live
        # the device's trusted time judges "dated ahead" (a clock set back must not refuse the
        # directory that ends a card) and every holder's valid_until (nor revive an ended card)
        self.directory = Directory(s.state_dir, daemon_keys_for(daemon, TRUST_DOCUMENT), s.site,
                                   skew_s=s.trust.clock_skew_s, clock=engine.trusted_now)
        self.occupancy = Occupancy(s.state_dir)
        self.holders: dict[str, Any] = {}  # approach id -> directory holder (card flows)
        clocks = getattr(daemon, "clocks", None)  # trusted time and uptime: a clock pushed forward lifts nothing
        if clocks is None:
            from edge.commands.seen import offline_clocks

            clocks = offline_clocks(s.state_dir)
        self.pins = PinLockouts(engine.state, clocks, s.gate.max_wrong_pins, s.gate.pin_lockout_s)

    def start(self) -> None:
        self.directory.load()
        if self.directory.problem:
            self.engine.emit("gate.directory_rejected", {"issued_at": None, "holders": None, "problem": "kept_file",
                                                         "detail": self.directory.problem}, "alarm")
        folded = self.occupancy.catch_up()
        link = self._daemon.link
        if link is not None:
            link.subscribe(TOPIC.format(site=self._daemon.settings.site), self._on_message, qos=1)
        log.info("gate_perimeter_started", directory=self.directory.summary(), occupancy_caught_up=folded)

    def stop(self) -> None:
        self.occupancy.close()

    def _on_message(self, topic: str, payload: bytes, props=None) -> None:
        """paho's thread: hand over, never work here."""
        self.engine.call(lambda: self.apply_directory(payload))

    def apply_directory(self, raw: bytes) -> None:
        try:
            doc = self.directory.apply(bytes(raw))
        except DocumentRejected as exc:
            log.warning("gate_directory_rejected", problem=exc.problem, detail=exc.detail[:200])
            self.engine.emit("gate.directory_rejected", {"issued_at": None, "holders": None,
                                                         "problem": exc.problem, "detail": exc.detail}, "alarm")
            return
        except OSError as exc:
            self.engine.emit("gate.directory_rejected", {"issued_at": None, "holders": None, "problem": "io",
                                                         "detail": f"cannot keep it: {exc}"}, "alarm")
            return
        self.engine.emit("gate.directory_applied", {"issued_at": doc.issued_at.isoformat(),
                                                    "holders": len(doc.holders), "problem": None,
                                                    "detail": "in use"}, "normal")

    # -- card approaches -----------------------------------------------------------------------

    def on_card(self, lane_name: str, event) -> None:
        """A card (or a booking code) at the lane's reader: start its approach, or deny it at once."""
        engine, lane, p = self.engine, self.engine.lanes[lane_name], event.payload
        if engine.approaches.get(lane_name) is not None:
            log.info("gate_card_ignored_lane_busy", lane=lane_name)
            self.feedback(lane_name, "deny")
            return
        direction, credential = lane.reader_direction, p.get("credential")
        holder = self.directory.holder(credential, self.directory.now()) if credential else None
        subject = (holder.subject_id or holder.id) if holder else None
        locked = self.pins.remaining(holder.id) if holder is not None else 0.0
        if holder is not None and holder.kind == "visitor" and not locked and \
                lane.flow(direction, "visitor") is not None:
            # a booking reference (a QR code on an ASCII reader, a visitor card): the visitor flow,
            # booking + face, with the entry/exit face check of services.gate.visits
            engine.begin(Approach(lane_name, direction, "visitor", lane.flow(direction, "visitor"), subject=subject,
                                  booking_id=credential, started_by="reader"), event.id)
            return
        flow = lane.flow(direction, "card")
        ap = Approach(lane_name, direction, "card", flow, subject=subject, started_by="reader")
        ap.start_event = event.id
        refusal = self._locked_refusal(holder, locked) or self._card_refusal(lane_name, flow, credential, holder, p)
        if refusal is not None:
            engine.approaches[lane_name] = ap
            engine.decide(ap, "deny", *refusal)
            return
        self.holders[ap.id] = holder
        engine.begin(ap, event.id)

    def _locked_refusal(self, holder, locked: float) -> tuple[str, str, str] | None:
        """A card locked out after wrong PINs is denied before any step: no PIN is asked for."""
        if not locked:
            return None
        return ("pin_locked", f"the card of directory holder {holder.id} is locked out after "
                f"{self.pins.wrong_count(holder.id)} wrong PINs in a row; {locked:.0f}s left", "normal")

    @staticmethod
    def _card_refusal(lane_name: str, flow, credential, holder, p) -> tuple[str, str, str] | None:
        """(reason, detail, priority) when the card cannot even start an approach."""
        if flow is None:
            return "unknown_credential", f"lane {lane_name} has no card flow for this direction", "normal"
        if credential is None:
            return "card_unreadable", f"the card was misread: {p.get('problem')}", "normal"
        if holder is None:
            return ("unknown_credential", "no holder in the directory for this card (or the holder's validity "
                    "ended)", "alarm")
        return None

    def card_step(self, ap: Approach, step) -> None:
        holder = self.holders.get(ap.id)
        ap.begin(step, None).end("ok", f"card of directory holder {holder.id if holder else '?'} ({holder.kind if holder else '?'})",
                                 [ap.start_event] if ap.start_event else [])

    def pin_entered(self, ap: Approach, event) -> None:
        """The card holder typed a PIN: the reader driver checks it against the directory's hash."""
        engine, rec, holder = self.engine, ap.record, self.holders.get(ap.id)
        if rec is None:
            return
        rec.evidence.append(event.id)
        if holder is None or holder.pin is None:
            engine.fail(ap, "no_pin_enrolled", "the directory holds no PIN for this card holder")
            return
        if (refusal := self._locked_refusal(holder, self.pins.remaining(holder.id))) is not None:
            engine.fail(ap, refusal[0], refusal[1])  # locked meanwhile (the card at another lane)
            return
        if not self.pins.begin_check(holder.id, ap.id):
            engine.fail(ap, "pin_check_busy", "a PIN for this card holder is being checked at another lane: "
                                              "one check at a time")
            return
        reader = engine.lanes[ap.lane].reader

        def done(result: dict[str, Any]) -> None:
            self.pins.end_check(holder.id, ap.id)
            evidence = engine.result_event(result)
            ok = result.get("status") == "ok"
            match = ok and bool((result.get("result") or {}).get("match"))
            lockout = self.pins.wrong(holder.id) if ok and not match else None  # counted even if decided
            if lockout is not None:
                self._lockout_alarm(ap, lockout, [event.id, *evidence])
            if ap.record is not rec:
                return  # decided meanwhile (timeout, override)
            rec.command_id = result.get("id")
            if not ok:
                engine.fail(ap, "reader_unavailable", f"PIN not checked: {result.get('detail')}", evidence=evidence)
            elif match:
                self.pins.right(holder.id)
                engine.step_ok(ap, evidence, "PIN matches the holder's")
            else:
                locked = f"; {lockout.wrong} wrong in a row: card locked out for {lockout.lockout_s:g}s" \
                    if lockout else ""
                engine.fail(ap, "pin_wrong", "the PIN does not match the holder's" + locked, evidence=evidence)
        engine.send(reader, "check_pin", holder.pin.model_dump(), f"gate approach {ap.id}", done)

    def _lockout_alarm(self, ap: Approach, lockout, evidence: list[str]) -> None:
        self.engine.emit("gate.pin_lockout", {
            "holder": lockout.holder, "lane": ap.lane, "approach_id": ap.id, "wrong_pins": lockout.wrong,
            "lockout_s": lockout.lockout_s, "locked_until": lockout.until_iso(),
            "evidence": evidence, "operator": None, "approved_by": None, "reason": None, "command_id": None,
            "detail": f"{lockout.wrong} wrong PINs in a row: the card is denied at this gate without a PIN "
                      f"check for {lockout.lockout_s:g}s (by the trusted time and the device's uptime)"}, "alarm")

    def clear_pin_lockout(self, holder: str, who: dict[str, Any]) -> dict[str, Any]:
        """Officers end a holder's lockout (and count) early: a barrier command, two people.
        ``who``: operator, approved_by, reason, command_id."""
        from edge.errors import CommandError

        try:
            had = self.pins.clear(holder)
        except StoreError as exc:
            raise CommandError(f"the lockout of {holder!r} stays: gate.db refused the change: {exc}") from None
        if had is None:
            raise CommandError(f"holder {holder!r} has no wrong PINs counted and no lockout at this gate "
                               f"(locked now: {', '.join(x['holder'] for x in self.pins.summary()) or 'none'})")
        payload = {"holder": holder, "lane": None, "approach_id": None, "wrong_pins": had[0], "lockout_s": None,
                   "locked_until": None, "evidence": [], **who, "detail": f"cleared with {had[1]:.0f}s of lockout left" if had[1] else
                   "wrong-PIN count cleared (no lockout in force)"}
        self.engine.emit("gate.pin_lockout_cleared", payload, "normal")
        return payload

    # -- anti-passback and occupancy -------------------------------------------------------------

    def _zones(self, lane_name: str, direction: str) -> tuple[str, str] | None:
        zones = self.engine.lanes[lane_name].zones
        if not zones:
            return None
        return (zones[0], zones[1]) if direction == "in" else (zones[1], zones[0])

    def passback_ok(self, ap: Approach) -> bool:
        """False when the approach was denied here (hard anti-passback)."""
        lane = self.engine.lanes[ap.lane]
        zones = self._zones(ap.lane, ap.direction)
        if zones is None or lane.anti_passback == "off" or not ap.subject:
            return True
        pos = self.occupancy.zone_of(ap.subject)
        if pos is None or pos["zone"] == zones[0]:
            return True
        action = "deny" if lane.anti_passback == "hard" else "grant"
        self.engine.emit("gate.anti_passback", {
            "approach_id": ap.id, "lane": ap.lane, "person": ap.subject, "direction": ap.direction,
            "expected_zone": zones[0], "recorded_zone": pos["zone"], "recorded_since": pos["since"],
            "action": action}, "alarm")
        if action == "grant":
            return True
        self.engine.decide(ap, "deny", "anti_passback",
                           f"{ap.subject} is recorded in {pos['zone']} since {pos['since']} (lane {pos['lane']}); "
                           f"this passage starts from {zones[0]}", "alarm")
        return False

    def passed(self, lane_name: str, p: dict[str, Any], event) -> None:
        """A granted person went through: move them in the ledger (event first, then the table)."""
        zones = self._zones(lane_name, p["direction"])
        person = p.get("subject")
        if zones is None or not person:
            return
        payload = {"person": person, "role": p.get("role") or "any", "lane": lane_name,
                   "direction": p["direction"], "from_zone": zones[0], "to_zone": zones[1],
                   "approach_id": p["approach_id"], "at": datetime.now(UTC).isoformat(),
                   "evidence": [event.id]}
        stored = self.engine.emit(OCCUPANCY, payload, "normal")
        if stored is None:
            return  # not recorded (store refused): the engine counted and logged it
        try:
            self.occupancy.fold(stored.seq, payload)
        except StoreError as exc:  # the event is stored: the next start folds it in
            log.error("gate_occupancy_not_folded", error=str(exc))

    # -- feedback ------------------------------------------------------------------------------

    def decided(self, ap: Approach, outcome: str) -> None:
        if outcome != "hold":
            holder = self.holders.pop(ap.id, None)
            if holder is not None:
                self.pins.end_check(holder.id, ap.id)
        self.feedback(ap.lane, outcome)

    def feedback(self, lane_name: str, outcome: str) -> None:
        reader = self.engine.lanes[lane_name].reader
        if reader and outcome in _FEEDBACK:
            self.engine.send(reader, "feedback", {"outcome": _FEEDBACK[outcome]}, f"gate lane {lane_name}",
                             lambda r: None)
