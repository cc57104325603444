"""``turnstile.serial``: one driver loop for every turnstile codec.

The run thread owns the serial port: it polls (bus) or listens (point to
point), runs commands handed over by the command thread, and reconnects with
backoff when the port goes away. No lock is held across a blocking read:
commands arrive through a queue and a wake-up pipe. A command succeeds only on
the device's ACK; after the configured retries it fails and the device is
reported offline.
"""

from __future__ import annotations

import queue
import random
import time
from pathlib import Path
from typing import Any

from drivers.turnstile import _commands, _confirm, _payload, _persist
from drivers.turnstile import messages as m
from drivers.turnstile._line import Line, LineLost
from drivers.turnstile._state import DeviceState, lane_mode
from drivers.turnstile.codecs import get_codec
from drivers.turnstile.config import TurnstileConfig
from edge.driver import Driver
from edge.errors import CommandError, DriverError, StoreFull


class _NoReply(Exception):
    pass


class _Refused(Exception):
    """A request for data (status, counters, events) was NAKed on every attempt."""

    def __init__(self, nak: m.Nak):
        super().__init__(nak)
        self.nak = nak


class TurnstileDriver(Driver):
    """A serial line with one (bcc-p2p) or up to 32 (rs485-bus) turnstile controllers."""

    Config = TurnstileConfig
    # grant/unlock/release let people through: two people. lock/lockdown/deny only ever
    # close a lane and must stay quick to issue in an incident: one.
    command_effects = _commands.EFFECTS

    def __init__(self, config: TurnstileConfig, ctx):
        super().__init__(config, ctx)
        self.codec = get_codec(config.codec)
        self.line = Line(config.port, config.baudrate)
        self.decoder = self.codec.decoder()
        self.devices = {a: DeviceState(a, flood_report_s=config.flood_report_s) for a in config.addresses}
        self.stats = {"timeouts": 0, "retries": 0, "reconnects": 0, "late_replies": 0,
                      "events_not_stored": 0, "commands_ok": 0, "commands_failed": 0,
                      "refused_polls": 0, "unconfirmed": 0}
        self._jobs: queue.Queue[_commands.Job] = queue.Queue()
        self._due = dict.fromkeys(config.addresses, 0.0)
        self._port_error: str | None = "not opened yet"
        self._last_rx = 0.0
        self._resync_due: set[int] = set()
        self._char_s = 10.0 / config.baudrate
        self._saved: str | None = None
        if config.state_file:
            self._load_state(config.state_file)

    # --- run thread -----------------------------------------------------------------------

    def run(self) -> None:
        cfg, delay, opened_before = self.config, self.config.reconnect_initial_s, False
        while not self.ctx.stopping.is_set():
            try:
                self.line.open()
            except LineLost as exc:
                self._port_down(str(exc))
                if self.ctx.wait(random.uniform(delay / 2, delay)):
                    return
                delay = min(delay * 2, cfg.reconnect_max_s)
                continue
            delay = cfg.reconnect_initial_s
            self.stats["reconnects"] += opened_before
            opened_before = True
            self._port_error = None
            self.decoder.idle()
            self._due = dict.fromkeys(cfg.addresses, 0.0)
            self._resync_due.clear()
            self.ctx.log.info("turnstile_port_open", port=cfg.port, baudrate=cfg.baudrate, codec=cfg.codec)
            try:
                self._serve()
            except LineLost as exc:
                self._port_down(str(exc))
            finally:
                self.line.close()

    def _serve(self) -> None:
        while not self.ctx.stopping.is_set():
            self._run_jobs()
            for address in self.config.addresses:
                if self._due[address] <= time.monotonic():
                    more = self._service(address)
                    # a device with more queued events is polled again at once, not next round
                    self._due[address] = time.monotonic() + (0.0 if more else self._interval(address))
                    self._run_jobs()  # a command never waits for a whole bus round
                if address in self._resync_due:
                    self._resync_due.discard(address)
                    try:
                        self._resync(address)
                    except _NoReply as exc:
                        self._offline(address, str(exc))
                    except _Refused:  # it answers but will not say: counters are read next time
                        self.ctx.log.warning("turnstile_resync_refused", address=address)
            self._save_state()
            self._listen(time.monotonic() if self._resync_due else min(self._due.values()))

    def _interval(self, address: int) -> float:
        if not self.devices[address].online:
            return self.config.offline_retry_s
        return self.config.poll_interval_s if self.codec.polled else self.config.status_interval_s

    def _service(self, address: int) -> bool:
        """One poll (bus) or status heartbeat (point to point); True when more events wait."""
        dev = self.devices[address]
        attempts = 1 if dev.online is False else None  # don't hold the bus for a dead device
        try:
            if self.codec.polled:
                return self._poll(address, attempts) is None
            dev.on_status(self._transact(address, m.GetStatus(), m.Status, attempts), self._emit)
        except _NoReply as exc:
            self._offline(address, str(exc))
        except _Refused:
            self.stats["refused_polls"] += 1  # alive, busy: poll again next round
        return False

    def _poll(self, address: int, attempts: int | None = None, drain: int = 8) -> m.Status | None:
        """Collect up to ``drain`` queued events; the Status that says the queue is empty, or None."""
        dev = self.devices[address]
        for _ in range(drain):
            reply = self._transact(address, m.Poll(dev.last_seq), (m.DeviceEvent, m.Status), attempts)
            if isinstance(reply, m.Status):
                dev.on_status(reply, self._emit)
                return reply
            self._take_event(address, reply)
        return None

    def _resync(self, address: int) -> None:
        """First contact, or back after a loss: drain its queue, then read counters for gaps."""
        dev = self.devices[address]
        report_gap = dev.counters is not None
        deadline = time.monotonic() + self.config.resync_timeout_s
        while time.monotonic() < deadline:
            if self.codec.polled:
                status = self._poll(address)
            else:
                status = self._transact(address, m.GetStatus(), m.Status)
                dev.on_status(status, self._emit)
            if status is not None and status.queued == 0:
                break
            if not self.codec.polled:
                self._listen(time.monotonic() + 4 * self.config.reply_timeout_s, jobs=False)
        counters = self._transact(address, m.ReadCounters(), m.Counters)
        dev.on_counters(counters, self._emit_safe, report_gap=report_gap)
        self.ctx.health_changed()  # `turnstile status` shows these counters now, not in 10 s

    def _offline(self, address: int, reason: str) -> None:
        dev = self.devices[address]
        was_online = dev.online is not False
        if was_online:
            self.ctx.log.warning("turnstile_device_offline", address=address, reason=reason)
        dev.set_online(False, self._emit_safe, reason)
        if was_online:
            self.ctx.health_changed()

    def _port_down(self, reason: str) -> None:
        if self._port_error != reason:
            self.ctx.log.warning("turnstile_port_unavailable", port=self.config.port, error=reason)
        self._port_error = reason
        for address in self.devices:
            self._offline(address, f"port unavailable: {reason}")
        self._fail_jobs(f"the serial port {self.config.port} is not available ({reason})")

    # --- the wire ---------------------------------------------------------------------------

    def _transact(self, address: int, request, expect, attempts: int | None = None):
        """Send ``request`` until a reply comes (Ack, Nak, or an ``expect`` message); else _NoReply.

        A command's NAK is its answer; a data request's NAK is retried, then _Refused.
        """
        attempts = attempts or 1 + self.config.retries
        frame = self.codec.encode(request, address)
        code = _payload.request_code(request)
        # The reply window starts when our frame has left the UART, and includes a reply's own time.
        window = self.config.reply_timeout_s + (len(frame) + self.codec.max_frame_bytes) * self._char_s
        refused = None
        for attempt in range(attempts):
            if attempt:
                self.stats["retries"] += 1
            # A stray late answer already waiting (e.g. the ACK of a command that timed out) must
            # not be taken for this request's answer: bcc's bare ACK carries nothing to tell them apart.
            for _ in self._receive(0):
                self.stats["late_replies"] += 1
            sent = time.monotonic()
            self.line.write(frame)
            reply = self._await(address, code, expect, sent + window)
            if reply is not None:
                dev = self.devices[address]
                dev.rtt_ms = round((time.monotonic() - sent) * 1000, 2)
                if not dev.online:
                    dev.set_online(True, self._emit_safe)
                    self.ctx.log.info("turnstile_device_online", address=address)
                    self.ctx.health_changed()
                    self._resync_due.add(address)  # after this exchange, not inside it
                if isinstance(reply, m.Nak) and expect is not None:
                    refused = reply  # a data request refused (busy; or a noise byte on bcc): ask again
                    continue
                return reply
            self.stats["timeouts"] += 1
        if refused is not None:
            raise _Refused(refused)
        raise _NoReply(f"no reply from address {address} after {attempts} attempt(s) of "
                       f"{window * 1000:.0f} ms")

    def _await(self, address: int, code: int, expect, deadline: float):
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            for rx in self._receive(min(remaining, self.config.frame_gap_s)):
                msg = rx.message
                if rx.address != address:
                    self.stats["late_replies"] += 1
                elif isinstance(msg, (m.Ack, m.Nak)) and msg.code in (None, code):
                    if expect is None or isinstance(msg, m.Nak):
                        return msg
                    # bcc-p2p: the ACK comes first and the data frame follows it
                elif expect is not None and isinstance(msg, expect):
                    return msg
                else:
                    self.stats["late_replies"] += 1

    def _receive(self, timeout: float) -> list[m.Received]:
        """Read and decode; device events of a push codec are taken here, the rest returned."""
        data = self.line.read(timeout)
        now = time.monotonic()
        if data:
            self._last_rx = now
            got = self.decoder.feed(data)
        elif now - self._last_rx >= self.config.frame_gap_s:
            got = self.decoder.idle()
        else:
            got = []
        out = []
        for rx in got:
            if isinstance(rx.message, m.REQUESTS) or rx.address not in self.devices:
                continue  # our own frames echoed by a half-duplex adapter, or a stranger
            if not self.codec.polled and isinstance(rx.message, m.DeviceEvent):
                self._take_event(rx.address, rx.message)
                if not self.devices[rx.address].online:
                    self._due[rx.address] = 0.0  # it talks: contact it now
            else:
                out.append(rx)
        return out

    def _take_event(self, address: int, event: m.DeviceEvent) -> None:
        """Store the event, then (push codecs) confirm it: never confirm what was not stored."""
        try:
            self.devices[address].on_event(event, self._emit)
        except StoreFull:
            self.stats["events_not_stored"] += 1  # not acknowledged: the device keeps it for later
            self.ctx.log.warning("turnstile_event_not_stored", address=address, device_seq=event.seq)
            return
        if not self.codec.polled:
            self.line.write(self.codec.encode(m.EventAck(), address))

    def _listen(self, until: float, jobs: bool = True) -> None:
        """Take unsolicited traffic until ``until``, or until a command is waiting."""
        while not self.ctx.stopping.is_set() and not (jobs and not self._jobs.empty()):
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            for _ in self._receive(min(remaining, 0.25)):
                self.stats["late_replies"] += 1

    # --- commands -------------------------------------------------------------------------

    @classmethod
    def check_command(cls, config: TurnstileConfig, name: str, args: dict[str, Any]) -> tuple:
        """(validated args, request, expected reply, address); CommandError before anything is sent."""
        parsed, request, expect = _commands.parse(name, dict(args or {}))
        address = parsed.address or config.addresses[0]
        if address not in config.addresses:
            raise CommandError(f"{name}: no controller at address {address} on this line; "
                               f"configured: {config.addresses}")
        return parsed, request, expect, address

    def handle(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run one command on a controller; the result only ever follows the device's ACK.

        Who asked, and the outcome, are recorded by the command router (``command.result``).
        """
        _parsed, request, expect, address = self.check_command(self.config, name, args)
        try:
            result = self._submit(name, address, request, expect)
        except CommandError:
            self.stats["commands_failed"] += 1
            raise
        self.stats["commands_ok"] += 1
        return result

    def _submit(self, name: str, address: int, request, expect) -> dict[str, Any]:
        if name in _commands.LOCKING and self.devices[address].emergency:
            raise CommandError(f"{name} refused: the fire-alarm free swing is active on address {address}; "
                               "the lane cannot be locked until the emergency clears")
        if self._port_error is not None:
            raise CommandError(f"{name} not sent: the serial port {self.config.port} is not available "
                               f"({self._port_error}); check the cable/adapter, then `edge status`")
        job = _commands.Job(name, address, request, expect)
        self._jobs.put(job)
        self.line.wake()
        if not job.done.wait(self.config.command_queue_timeout_s) and job.cancel():
            raise CommandError(f"{name} not sent: the driver did not get to it within "
                               f"{self.config.command_queue_timeout_s} s (device busy or reconnecting)")
        cfg = self.config
        bound = cfg.resync_timeout_s + 4 * (1 + cfg.retries) * (cfg.reply_timeout_s + 0.5)
        if not job.done.wait(bound):  # started: bounded by the retries and one resync
            raise CommandError(f"{name}: the driver loop did not finish it within {bound:.0f} s; "
                               "its effect is unknown, check the lane")
        if job.error:
            raise job.error
        return job.result

    def _run_jobs(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if not job.start():
                continue
            try:
                job.finish(self._execute(job))
            except CommandError as exc:
                job.finish(error=exc)
            except LineLost as exc:
                job.finish(error=CommandError(f"{job.name} failed: the serial port went away ({exc})"))
                raise
            except BaseException as exc:  # the loop is dying (the supervisor restarts it): answer first
                job.finish(error=CommandError(f"{job.name} failed: driver fault {type(exc).__name__}: {exc}"))
                raise

    def _execute(self, job: _commands.Job) -> dict[str, Any]:
        dev = self.devices[job.address]
        if job.name in _commands.LOCKING and dev.emergency:
            raise CommandError(f"{job.name} refused: the fire-alarm free swing is active on address "
                               f"{job.address}; the lane cannot be locked until the emergency clears")
        started = time.monotonic()
        if isinstance(job.request, m.Lock):
            kept = self._lock_in_lockdown(job)
            if kept is not None:
                return kept
        try:
            reply = self._transact(job.address, job.request, job.expect)
        except _Refused as exc:
            reply = exc.nak
        except _NoReply as exc:
            state = _confirm.describe(self._read_status(job.address))  # the outcome is unknown: ask
            if "could not" in state:
                self._offline(job.address, str(exc))
            raise CommandError(f"{job.name} NOT confirmed: {exc}; {state}. "
                               "Treat the lane as unchanged and check it on site") from None
        if isinstance(reply, m.Nak):
            reason = reply.reason.name.lower() if reply.reason is not None else "no reason given"
            raise CommandError(f"{job.name} refused by the controller at address {job.address} (NAK: {reason})")
        result: dict[str, Any] = {"ok": True, "command": job.name, "address": job.address,
                                  "rtt_ms": round((time.monotonic() - started) * 1000, 2)}
        if (want := _confirm.expected_mode(job.request)) is not None:
            result["mode"] = self._confirm_mode(job, want)
        if isinstance(job.request, m.Grant):
            # Emitted here, on the thread that reads the line, so it is stored before the
            # passage that follows it: central sees granted, then passage, in seq order.
            g = job.request
            self._emit_safe("turnstile.granted", {"address": job.address, "direction": g.direction,
                                                  "passes": g.passes, "timeout_s": g.timeout_s}, "normal")
        if isinstance(reply, m.Counters):
            result["counters"] = {"in": reply.inbound, "out": reply.outbound}
            dev.on_counters_read(reply)
            self.ctx.health_changed()  # so `turnstile status` agrees with what counters just said
        elif isinstance(reply, m.Status):
            dev.on_status(reply, self._emit)
            result["status"] = {"mode": reply.mode.name.lower(), "emergency": reply.emergency,
                                "tamper": reply.tamper, "held_open": reply.held_open,
                                "fault": reply.fault, "queued": reply.queued}
        return result

    def _lock_in_lockdown(self, job: _commands.Job) -> dict[str, Any] | None:
        """LOCK on the wire means "normal controlled mode": sent to a controller in lockdown it
        would leave the lockdown, which is ``release`` (a barrier command, two people), while
        ``lock`` is one person. So the lane's mode is read first: in lockdown the lane is already
        closed and stays so (nothing is sent); unreadable, nothing is sent either (fail closed)."""
        status = self._read_status(job.address)
        if status is None:
            self._offline(job.address, "no reply to a status request")
            raise CommandError(f"lock NOT sent: the state of the controller at address {job.address} could "
                               "not be read, and lock would end a lockdown there; check the lane")
        if status.mode != m.Mode.LOCKDOWN:
            return None
        return {"ok": True, "command": job.name, "address": job.address, "mode": "lockdown",
                "detail": f"the controller at address {job.address} is in lockdown and stays in it (already "
                          "closed; lock would end the lockdown); leaving lockdown is `release`, "
                          "a barrier command that needs two people"}

    def _read_status(self, address: int, attempts: int | None = None) -> m.Status | None:
        try:
            status = self._transact(address, m.GetStatus(), m.Status, attempts)
        except (_NoReply, _Refused):
            return None
        self.devices[address].on_status(status, self._emit)
        return status

    def _confirm_mode(self, job: _commands.Job, want: m.Mode) -> str:
        """The mode read back after an ACKed barrier command; CommandError unless it is ``want``."""
        status = self._read_status(job.address)
        if status is None:
            raise CommandError(f"{job.name} NOT confirmed: acknowledged, but the controller's state could "
                               "not be read back; treat the lane as unchanged and check it on site")
        problem = _confirm.mismatch(job.name, job.address, want, status)
        if problem is not None:
            self.stats["unconfirmed"] += 1
            raise CommandError(problem)
        return status.mode.name.lower()

    def _fail_jobs(self, reason: str) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job.start():
                job.finish(error=CommandError(f"{job.name} not sent: {reason}"))

    # --- events, health, close ----------------------------------------------------------------

    def _emit(self, type: str, payload: dict, priority: str):
        return self.ctx.emit(type, payload, priority)

    def _emit_safe(self, type: str, payload: dict, priority: str):
        """For events about the driver itself: a full store must not stop the lane."""
        try:
            return self.ctx.emit(type, payload, priority)
        except StoreFull:
            self.stats["events_not_stored"] += 1
            self.ctx.log.warning("turnstile_event_not_stored", type=type)

    def health(self) -> dict[str, Any]:
        # not contacted yet (None) is not a fault; a controller that stopped answering is
        offline = [a for a, d in self.devices.items() if d.online is False]
        status = "down" if self._port_error else ("degraded" if offline else "ok")
        report = {"status": status, "port": self.config.port, "codec": self.config.codec,
                  "baudrate": self.config.baudrate, "line": self.decoder.stats.as_dict(), **self.stats,
                  "devices": {str(a): d.health() for a, d in self.devices.items()}}
        if self._port_error:
            report["port_error"] = self._port_error
        report.update(lane_mode(self.devices, self.ctx.name))  # `edge status`: the mode, what ends it
        return report

    def _load_state(self, path: Path) -> None:
        try:
            _persist.load(path, self.devices)
        except DriverError as exc:
            # The lane must work without it: start from a fresh baseline, keep the bad file to look at.
            aside = path.with_name(f"{path.name}.bad-{int(time.time())}")
            self.ctx.log.error("turnstile_state_file_unusable", error=str(exc), moved_to=str(aside))
            self.devices = {a: DeviceState(a, flood_report_s=self.config.flood_report_s) for a in self.config.addresses}
            try:
                path.rename(aside)
            except OSError:
                pass  # unreadable and immovable: it will be overwritten on the next save
        self._saved = self._snapshot()

    def _snapshot(self) -> str:
        return repr([(d.last_seq, d.counters) for d in self.devices.values()])

    def _save_state(self) -> None:
        """Write the state file when something changed (at most once per loop turn)."""
        if self.config.state_file is None:
            return
        snapshot = self._snapshot()
        if snapshot != self._saved:
            _persist.save(self.config.state_file, self.devices)
            self._saved = snapshot

    def close(self) -> None:
        self._fail_jobs("the driver is stopping")
        self.line.dispose()
        try:
            self._save_state()
        except DriverError as exc:  # close() must not raise; the file is at most a moment old
            self.ctx.log.error("turnstile_state_not_saved", error=str(exc))
