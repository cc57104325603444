"""``reader.osdp``: one OSDP reader on a serial line, this driver being the controller (CP).

libosdp runs the protocol (polling, secure channel, retries) on its own
thread; this driver's run thread takes libosdp's events off its queue and
turns them into ``reader.*`` events, watches the port, and reconnects with
backoff when the port goes away. Commands (LED and buzzer feedback, PIN
check) come from the command thread and succeed only when the reader
acknowledged them.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from typing import Any

import osdp

from drivers.readers import _commands, cards
from drivers.readers._channel import PortUnavailable, SerialChannel
from drivers.readers._pin import PinPad
from drivers.readers._ticking import TickingRefresh
from drivers.readers.config import OsdpReaderConfig, read_key
from edge.driver import Driver
from edge.errors import CommandError, DriverError, StoreFull
from edge.ratelimit import ChangeFold, FloodReport, TokenBucket

_FORMATS = {osdp.CardFormat.Wiegand: "wiegand", osdp.CardFormat.Unspecified: "raw",
            osdp.CardFormat.ASCII: "ascii"}
_NOTE_SC, _NOTE_PD = osdp.EventNotification.SecureChannelStatus, osdp.EventNotification.PeripheralDeviceStatus
_STATUS = {"reader.tamper": ("tamper", "active"), "reader.power": ("power_failed", "failed")}


class _ControlPanel(TickingRefresh, osdp.ControlPanel):
    """libosdp's CP, its refresh thread ticking every ``refresh_s``.

    Each event is tagged ``secure``: whether the secure channel was up when libosdp decoded
    it (read in libosdp's own thread, so a later change of state cannot relabel it).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ctx.set_event_callback(self._tagged_event)

    def _tagged_event(self, pd: int, event: dict) -> int:
        event["secure"] = bool(self.ctx.sc_status() & (1 << pd))
        self.event_queue[pd].put(event)
        return 0


class OsdpReaderDriver(Driver):
    """An OSDP reader (card, keypad, LED, buzzer, tamper) at one address on a serial line."""

    Config = OsdpReaderConfig
    #: Effect classes (edge.commands.effects): the reader opens nothing. check_pin uses up the
    #: PIN held for the gate's check, so it is not a mere observation.
    command_effects = {"feedback": "operate", "check_pin": "operate", "status": "observe"}

    def __init__(self, config: OsdpReaderConfig, ctx):
        super().__init__(config, ctx)
        try:
            self._key = read_key(config.key_file) if config.key_file else None
        except (OSError, ValueError) as exc:
            raise DriverError(f"reader {ctx.name}: {exc}") from None
        self.pin = PinPad(config.pin_terminator, config.pin_max_digits, config.pin_timeout_s, config.pin_ttl_s)
        self.online: bool | None = None
        self.secure = False
        self.tamper = False
        self.power_failed = False
        self.port_error: str | None = "not opened yet"
        self.stats = {"cards": 0, "unreadable_cards": 0, "cards_refused": 0, "pins": 0, "events_not_stored": 0,
                      "commands_ok": 0, "commands_failed": 0, "sc_failures": 0, "plaintext_refused": 0,
                      "status_changes_suppressed": 0, "link_changes_suppressed": 0}
        # A keyed reader (or someone at its cable) can replay reads at its polling rate: each
        # would be a card event, a gate decision and, for an unknown card, an alarm central keeps.
        self._reads = TokenBucket(config.rate, config.burst)
        self.flood = FloodReport(config.flood_report_s, self._flood_report)
        # A flapping tamper/power switch, a reader sending status reports at its polling rate, or
        # someone working its cable (offline/online every offline_retry_s) would be an alarm per
        # change that the store never evicts: a few alarmed, the rest folded into reader.flood.
        self.flaps = ChangeFold(config.flood_report_s, self._alarm_status, self._flap_report,
                                initial={"reader.tamper": False, "reader.power": False})
        self.links = ChangeFold(config.flood_report_s, self._alarm_link, self._link_report)
        self._offline_reason: str | None = None
        self._sc_detail = ""
        self._cp: osdp.ControlPanel | None = None
        self._sc_alarmed = False
        self._sc_up = False  # the secure channel was up during this contact
        self._waiters: deque = deque()
        self._waiters_lock = threading.Lock()
        if config.allow_plaintext:
            ctx.log.warning("reader_plaintext_allowed", reader=ctx.name, port=config.port,
                            detail="no secure channel: card numbers can be read and forged on the cable")
        if config.install_mode:
            ctx.log.warning("reader_install_mode", reader=ctx.name, port=config.port,
                            detail="the reader's default key is accepted to hand it its own key; "
                                   "remove install_mode after the install visit")

    # --- run thread -----------------------------------------------------------------------

    def run(self) -> None:
        cfg, delay = self.config, self.config.reconnect_initial_s
        while not self.ctx.stopping.is_set():
            try:
                channel = SerialChannel(cfg.port, cfg.baudrate)
            except PortUnavailable as exc:
                self._port_down(str(exc))
                self._tick()  # a flood's reports (and the state it left) are due with the port gone too
                if self.ctx.wait(random.uniform(delay / 2, delay)):
                    return
                delay = min(delay * 2, cfg.reconnect_max_s)
                continue
            delay = cfg.reconnect_initial_s
            self.port_error = None
            self.ctx.log.info("reader_port_open", port=cfg.port, baudrate=cfg.baudrate, address=cfg.address)
            cp = self._control_panel(channel)
            try:
                self._serve(cp, channel)
            finally:
                self._cp = None
                cp.stop()
                channel.close()
            if channel.error:
                self._port_down(channel.error)

    def _control_panel(self, channel: SerialChannel) -> osdp.ControlPanel:
        cfg = self.config
        flags = [osdp.LibFlag.EnableNotification]
        if self._key is not None:
            flags.append(osdp.LibFlag.InstallMode if cfg.install_mode else osdp.LibFlag.EnforceSecure)
        info = osdp.PDInfo(cfg.address, channel, scbk=self._key, name=self.ctx.name, flags=flags)
        cp = _ControlPanel([info], log_level=osdp.LogLevel.Error, command_completion_handler=self._completed,
                           refresh_s=cfg.refresh_interval_s)
        cp.start()
        self._cp = cp
        return cp

    def _serve(self, cp: osdp.ControlPanel, channel: SerialChannel) -> None:
        """Until stopped, the port is lost, or the reader stayed offline ``offline_retry_s`` (start afresh)."""
        address, down_since = self.config.address, time.monotonic()
        self._sc_up = False
        while not self.ctx.stopping.is_set() and channel.error is None:
            event = cp.get_event(address, timeout=0.1)
            if event is not None:
                self._on_event(event)
            self._watch(cp)
            self.pin.forget_expired()
            self._tick()
            if self.online:
                down_since = time.monotonic()
            elif time.monotonic() - down_since > self.config.offline_retry_s:
                self.ctx.log.info("reader_contact_afresh", address=address, after_s=self.config.offline_retry_s)
                return

    def _tick(self) -> None:
        for fold in (self.flood, self.flaps, self.links):
            fold.tick()

    def _watch(self, cp: osdp.ControlPanel) -> None:
        """libosdp's own view of the reader: the notifications may be missed, this never is.

        With a key, a reader answering without the secure channel is not online: libosdp
        lets a reader that does not offer the secure channel talk in clear in install mode.
        """
        online = cp.is_online(self.config.address)
        if online and self._key is not None and not cp.is_sc_active(self.config.address):
            self._plaintext_refused("the reader answers without the secure channel")
            online = False
        if online != bool(self.online) and (online or self.online is not None):
            self._set_online(online, None if online else "the reader stopped answering")

    def _plaintext_refused(self, what: str) -> None:
        """A keyed reader spoke in clear: nothing it says counts; one alarm per failure streak."""
        if self._sc_alarmed:
            return
        self._sc_alarmed = True
        self.stats["sc_failures"] += 1
        self.ctx.log.warning("reader_plaintext_refused", reader=self.ctx.name, what=what)
        self._emit("reader.secure_channel_failed",
                   {"detail": f"{what} (a reader without secure channel, or a downgrade on the cable): "
                              "its cards and keys are refused"}, "alarm")

    def _on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        if kind in (osdp.Event.CardRead, osdp.Event.KeyPress) and self._key is not None and not ev.get("secure"):
            self.stats["plaintext_refused"] += 1
            self._plaintext_refused("a card read or key press came without the secure channel")
            return
        if kind == osdp.Event.CardRead:
            if self._reads.try_take():
                self._card(ev)
            else:  # over the limit: never a credential, counted in one reader.flood report
                self.stats["cards_refused"] += 1
                self.flood.refused()
        elif kind == osdp.Event.KeyPress:
            digits = self.pin.keys(ev.get("data") or b"")
            if digits is not None:
                self.stats["pins"] += 1
                self._emit("reader.pin_entered", {"reader_no": ev.get("reader_no", 0), "digits": digits})
        elif kind == osdp.Event.Status:
            self._status(ev)
        elif kind == osdp.Event.Notification:
            self._notification(ev)

    def _card(self, ev: dict[str, Any]) -> None:
        card = cards.decode(_FORMATS.get(ev.get("format"), "raw"), ev.get("data") or b"", ev.get("length"),
                            raw_as_text=self.config.raw_as_text)
        self.stats["cards" if card.credential else "unreadable_cards"] += 1
        self._emit("reader.card", {"reader_no": ev.get("reader_no", 0), "format": card.format, "bits": card.bits,
                                   "credential": card.credential, "problem": card.problem})

    def _flood_report(self, state: str, suppressed: int, total: int, duration_s: float) -> None:
        cfg = self.config
        limit = f"{cfg.burst} at once, then {cfg.rate:g} a second"
        detail = {"started": f"card reads faster than this reader's limit ({limit}): reads over it are refused "
                             "(a reader replaying reads, or someone on its cable?)",
                  "continuing": f"{suppressed} card reads refused in the last {cfg.flood_report_s:g}s",
                  "ended": f"no read refused for {cfg.flood_report_s:g}s; {total} refused in all"}[state]
        self.ctx.log.warning("reader_flood", reader=self.ctx.name, state=state, suppressed=suppressed, total=total)
        self._emit("reader.flood", {"what": "card_reads", "state": state, "suppressed": suppressed, "total": total,
                                    "duration_s": duration_s, "rate": cfg.rate, "burst": cfg.burst,
                                    "detail": detail}, "alarm" if state == "started" else "normal")
        if state != "continuing":
            self.ctx.health_changed()

    def _status(self, ev: dict[str, Any]) -> None:
        if ev.get("type") != osdp.StatusReportType.Local:
            return
        report = bytes(ev.get("report") or b"")
        tamper = bool(report[0]) if len(report) > 0 else self.tamper
        power = bool(report[1]) if len(report) > 1 else self.power_failed
        for type, value in (("reader.tamper", tamper), ("reader.power", power)):
            attr = _STATUS[type][0]
            if value != getattr(self, attr):
                setattr(self, attr, value)  # health shows every change; the alarms are bounded
                if not self.flaps.changed(type, value):
                    self.stats["status_changes_suppressed"] += 1
        self.ctx.health_changed()

    def _alarm_status(self, type: str, value: bool) -> None:
        self._emit(type, {_STATUS[type][1]: value}, "alarm")

    def _flap_report(self, state: str, suppressed: int, total: int, duration_s: float) -> None:
        self.ctx.log.warning("reader_status_flood", reader=self.ctx.name, state=state, suppressed=suppressed,
                             total=total, tamper=self.tamper, power_failed=self.power_failed)
        self._emit("reader.flood", {"what": "status_changes", **self.flaps.payload(
            state, suppressed, total, duration_s, "tamper/power changes")}, "alarm" if state == "started" else "normal")
        self.ctx.health_changed()

    def _alarm_link(self, key: str, online: bool) -> None:
        if key == "secure_channel":  # its failures are alarms; its return is in reader.online
            if not online:
                self._emit("reader.secure_channel_failed", {"detail": self._sc_detail}, "alarm")
        elif online:
            secure = self._cp is not None and self._cp.is_sc_active(self.config.address)
            self.ctx.log.info("reader_online", address=self.config.address, secure=secure)
            self._emit("reader.online", {"secure": secure})
        else:
            reason = self._offline_reason
            self.ctx.log.warning("reader_offline", address=self.config.address, reason=reason)
            # an alarm: a cut cable or a reader pulled off the wall must not go unnoticed
            self._emit("reader.offline", {"reason": reason or "not answering"}, "alarm")

    def _link_report(self, state: str, suppressed: int, total: int, duration_s: float) -> None:
        self.ctx.log.warning("reader_link_flood", reader=self.ctx.name, state=state, suppressed=suppressed,
                             total=total, online=self.online)
        self._emit("reader.flood", {"what": "link_changes", **self.links.payload(
            state, suppressed, total, duration_s, "offline/online and secure channel changes")}, "alarm" if state == "started" else "normal")
        self.ctx.health_changed()

    def _notification(self, ev: dict[str, Any]) -> None:
        if ev.get("type") == _NOTE_SC:
            self.secure = bool(ev.get("arg0"))
            if self.secure:
                if self._sc_alarmed:  # a link flapping drops the channel each time: folded with it
                    self.links.changed("secure_channel", True)
                self._sc_alarmed, self._sc_up = False, True
            elif not self.config.install_mode and not self._sc_alarmed:
                # once per failure streak: the driver keeps trying (offline_retry_s)
                self._sc_alarmed = True
                self.stats["sc_failures"] += 1
                self._sc_detail = ("the secure channel dropped (line noise, a timeout, or someone on the cable); "
                                   "re-establishing it" if self._sc_up else
                                   "the reader refused the secure channel: it does not hold this reader's key "
                                   "(wrong key file, or the reader was swapped)")
                self.ctx.log.warning("reader_secure_channel_failed", reader=self.ctx.name, was_up=self._sc_up)
                if not self.links.changed("secure_channel", False):
                    self.stats["link_changes_suppressed"] += 1
        elif ev.get("type") == _NOTE_PD and self._cp is not None:
            self._watch(self._cp)

    def _set_online(self, online: bool, reason: str | None) -> None:
        if online == self.online:
            return
        self.online = online
        if not online:
            self._offline_reason = reason
        if not self.links.changed("online", online):  # a link flapping (someone at the cable?): folded
            self.stats["link_changes_suppressed"] += 1
        self.ctx.health_changed()

    def _port_down(self, reason: str) -> None:
        if self.port_error != reason:
            self.ctx.log.warning("reader_port_unavailable", port=self.config.port, error=reason)
        self.port_error = reason
        self._set_online(False, f"port unavailable: {reason}")
        self._fail_waiters(f"the reader's port is not available ({reason})")

    def _emit(self, type: str, payload: dict[str, Any], priority: str = "normal") -> None:
        try:
            self.ctx.emit(type, {"address": self.config.address, **payload}, priority)
        except StoreFull:
            self.stats["events_not_stored"] += 1
            self.ctx.log.warning("reader_event_not_stored", type=type)

    # --- commands -------------------------------------------------------------------------

    @classmethod
    def check_command(cls, config: OsdpReaderConfig, name: str, args: dict[str, Any]):
        """The validated arguments; CommandError for an unknown command or a bad argument."""
        return _commands.parse(name, dict(args or {}))

    def handle(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        a = self.check_command(self.config, name, args)
        if name == "status":
            return self.health()
        if name == "check_pin":
            match, detail = self.pin.check(bytes.fromhex(a.salt), bytes.fromhex(a.hash), a.iterations)
            return {"match": match, "detail": detail}
        started = time.monotonic()
        for cmd in _commands.feedback(a):
            self._submit(cmd)
        return {"outcome": a.outcome, "rtt_ms": round((time.monotonic() - started) * 1000, 1)}

    def _submit(self, cmd: dict[str, Any]) -> None:
        cp = self._cp
        if cp is None or not self.online:
            self.stats["commands_failed"] += 1
            raise CommandError(f"reader {self.ctx.name} is offline ({self.port_error or 'not answering'})")
        waiter = {"command": cmd["command"], "done": threading.Event(), "status": None, "error": None}
        with self._waiters_lock:
            self._waiters.append(waiter)
            if not cp.submit_command(self.config.address, cmd):
                self._waiters.remove(waiter)
                self.stats["commands_failed"] += 1
                raise CommandError(f"reader {self.ctx.name}: libosdp refused the command (queue full or offline)")
        if not waiter["done"].wait(self.config.command_timeout_s):
            with self._waiters_lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            self.stats["commands_failed"] += 1
            raise CommandError(f"reader {self.ctx.name}: no acknowledgement within {self.config.command_timeout_s:g}s")
        if waiter["error"] or waiter["status"] != osdp.CompletionStatus.Ok:
            self.stats["commands_failed"] += 1
            why = waiter["error"] or f"completion status {waiter['status']}"
            raise CommandError(f"reader {self.ctx.name}: command not done ({why})")
        self.stats["commands_ok"] += 1

    def _completed(self, address: int, command: dict[str, Any], status: int) -> None:
        """libosdp's thread: a command we submitted was acknowledged (or failed); wake its waiter."""
        with self._waiters_lock:
            for waiter in self._waiters:
                if waiter["command"] == command.get("command"):
                    self._waiters.remove(waiter)
                    waiter["status"] = status
                    waiter["done"].set()
                    return

    def _fail_waiters(self, reason: str) -> None:
        with self._waiters_lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                waiter["error"] = reason
                waiter["done"].set()

    def health(self) -> dict[str, Any]:
        status = "ok" if self.online else "down"
        if self.online and (self.tamper or self.power_failed or self.flood.active or self.flaps.active
                            or self.links.active):
            status = "degraded"
        report = {"status": status, "external": status == "degraded",  # all its causes are the reader's word
                  "online": self.online, "secure": self.secure, "tamper": self.tamper,
                  "power_failed": self.power_failed, "flooding": self.flood.active,
                  "status_flapping": self.flaps.active, "link_flapping": self.links.active,
                  "port_error": self.port_error,
                  **self.stats}
        if note := self._note():
            report["note"] = note
        return report

    def _note(self) -> str | None:
        """Why this reader is not ok, in words, and where to look (`edge status`, `edge doctor`)."""
        if not self.online:
            return f"offline: {self.port_error}" if self.port_error else "offline: the reader does not answer its polls"
        problems = []
        if self.flood.active:
            cfg = self.config
            problems.append(f"FLOODING: {self.flood.total} card reads refused in this flood, over its limit "
                            f"({cfg.burst} at once, then {cfg.rate:g} a second): a reader replaying reads, or "
                            f"someone on its cable? (`edge events tail --type reader.flood`; [[drivers]] rate, burst)")
        if self.flaps.active:
            problems.append(f"FLAPPING: {self.flaps.total} tamper/power changes past the alarm limit in this flood "
                            "(`edge events tail --type reader.flood`)")
        if self.links.active:
            problems.append(f"LINK FLAPPING: {self.links.total} offline/online changes past the alarm limit in "
                            "this flood: a loose cable or someone on it? (`edge events tail --type reader.flood`)")
        if self.tamper:
            problems.append("TAMPER: the reader's tamper switch is open")
        if self.power_failed:
            problems.append("POWER: the reader reports a power failure")
        return "; ".join(problems) or None

    def close(self) -> None:
        self._fail_waiters("the driver is stopping")
