"""``xray.stream``: scanner records, one per line, over a pyserial URL.

``url`` is anything pyserial opens: a serial device (/dev/ttyUSB0), a pty,
or ``socket://host:port`` for scanners that stream over TCP. Lines longer
than ``max_line_bytes`` are discarded as they stream past and reported with
an ``xray.rejected`` event; the next newline resynchronises. A lost
connection is reopened with capped exponential backoff; a partial line cut
by the disconnect is dropped (it can never be completed). Note that pyserial
flushes input pending at the moment a port is opened (serial and socket://
alike), so a record sent during the connect itself is not seen.

Authentication: every line carries an HMAC-SHA256 of the record under a
secret shared with that one scanner (``secret_file``)::

    hmac-sha256=<64 hex digits> <the record as before>

Why HMAC and not TLS with a client certificate: the same adapter reads RS-232
lines, where TLS cannot run, and TCP lines, where pyserial's socket:// has no
TLS; a MAC on each record authenticates the record itself, whoever relays it,
and a scanner vendor can add it with a few lines and no PKI. A line without a
valid MAC is refused (``xray.rejected``, priority alarm) and never counted. A
replayed line is a duplicate scan id (not counted twice), and the gate
refuses scan results older than ``gate.scan_freshness_s``.
"""

from __future__ import annotations

import hmac
import re
import select
import stat
from hashlib import sha256
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from drivers.xray import line_source
from drivers.xray.line_source import LineSplitter, Overlong
from drivers.xray.scan import ScanRejected, build_scan
from edge.driver import Driver, DriverConfig
from edge.errors import DriverError

_READ_MAX = 64 * 1024


class StreamConfig(DriverConfig):
    url: str = Field(min_length=1, description="pyserial URL: /dev/ttyUSB0, a pty path, socket://host:port.")
    baudrate: int = Field(default=9600, gt=0, description="Serial line speed, bits/s (a serial URL only).")
    max_line_bytes: int = Field(default=64 * 1024, ge=256, le=16 * 1024 * 1024,
                                description="Longer lines are discarded and reported as xray.rejected.")
    read_timeout_s: float = Field(default=0.2, gt=0, le=5, description="A read waits at most this long "
                                                                     "(how soon a stop is noticed).")
    reconnect_min_s: float = Field(default=0.5, gt=0, description="First wait before reopening a lost "
                                   "connection; it doubles up to reconnect_max_s.")
    reconnect_max_s: float = Field(default=30.0, gt=0, description="Longest wait between two reconnects.")
    scanner: str | None = Field(default=None, description="Scanner id for records that do not name one.")
    secret_file: Path | None = Field(default=None, description="This scanner's shared HMAC secret (at least "
                                     "32 bytes, mode 0600/0640): every line must carry its HMAC-SHA256.")
    allow_unauthenticated: bool = Field(default=False, description="DANGEROUS: accept lines without an HMAC (anyone "
                                        "who can reach the port can then forge scan results).")

    @model_validator(mode="after")
    def _auth(self) -> StreamConfig:
        if self.secret_file is None and not self.allow_unauthenticated:
            raise ValueError("set secret_file (the scanner's shared HMAC secret); allow_unauthenticated = true "
                             "accepts forged results and is for bench tests only")
        return self


_MAC = re.compile(rb"^hmac-sha256=([0-9a-f]{64}) ")
MIN_SECRET_BYTES = 32


def read_secret(path: Path) -> bytes:
    """The shared secret, refused when short or readable by others."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise DriverError(f"secret_file {path}: cannot read it: {exc.strerror}") from None
    if mode & 0o007:
        raise DriverError(f"secret_file {path}: readable by others (mode {mode:04o}); chmod 0600")
    if len(secret) < MIN_SECRET_BYTES:
        raise DriverError(f"secret_file {path}: {len(secret)} bytes; at least {MIN_SECRET_BYTES} expected "
                          "(e.g. head -c 48 /dev/urandom | base64 > FILE)")
    return secret


def sign_line(secret: bytes, record: bytes) -> bytes:
    """What the scanner sends for one record (without the newline)."""
    return b"hmac-sha256=" + hmac.new(secret, record, sha256).hexdigest().encode() + b" " + record


class XrayStreamDriver(Driver):
    """Line-stream adapter: JSON or key=value records over serial or TCP."""

    Config = StreamConfig

    def __init__(self, config: StreamConfig, ctx):
        super().__init__(config, ctx)
        self.splitter = LineSplitter(config.max_line_bytes)
        self.connected = False
        self.counts = {"connects": 0, "lines": 0, "emitted": 0, "duplicates": 0, "rejected": 0, "reconnects": 0}
        self._last_error: str | None = None
        self._secret: bytes | None = None

    def run(self) -> None:
        if self.config.secret_file is not None:
            self._secret = read_secret(self.config.secret_file)
        else:
            self.ctx.log.warning("xray_stream_unauthenticated", url=self.config.url,
                                 detail="allow_unauthenticated = true: anyone reaching the port can forge scans")
        self.service = self.ctx.service("xray")  # the daemon's dose ledger (services/xray)
        if self.service is None:
            raise DriverError("the x-ray service is not running in this daemon; xray.* drivers need it")
        delay = self.config.reconnect_min_s
        while not self.ctx.stopping.is_set():
            port = self._open()
            if port is None:
                if self.ctx.wait(delay):
                    return
                delay = min(delay * 2, self.config.reconnect_max_s)
                continue
            delay = self.config.reconnect_min_s
            try:
                self._read(port)
            finally:
                self._close(port)

    def _open(self):
        import serial

        try:
            # Non-blocking reads after our own select(): pyserial's socket:// in_waiting is
            # only 0 or 1, and a blocking read(n) would wait for n bytes or the timeout.
            port = serial.serial_for_url(self.config.url, baudrate=self.config.baudrate, timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            self._last_error = f"cannot open {self.config.url}: {exc}"[:300]
            self.ctx.log.warning("xray_stream_open_failed", url=self.config.url, error=str(exc)[:200])
            return None
        self.connected, self._last_error = True, None
        self.counts["connects"] += 1
        self.ctx.log.info("xray_stream_connected", url=self.config.url)
        self.ctx.emit("xray.stream_state", {"url": self.config.url, "connected": True}, "normal")
        return port

    def _close(self, port) -> None:
        if self.connected:
            self.counts["reconnects"] += 1
            # Transitions only (never per failed retry): supervisors see scanner link outages.
            self.ctx.emit("xray.stream_state", {"url": self.config.url, "connected": False,
                                                "error": self._last_error}, "normal")
        self.connected = False
        self.splitter.reset()
        try:
            port.close()
        except OSError:
            pass

    def _read(self, port) -> None:
        import serial

        fd = port.fileno()
        while not self.ctx.stopping.is_set():
            try:
                ready, _, _ = select.select([fd], [], [], self.config.read_timeout_s)
                if not ready:
                    continue
                chunk = port.read(_READ_MAX)
            except (serial.SerialException, OSError) as exc:
                self._last_error = f"connection lost: {exc}"[:300]
                self.ctx.log.warning("xray_stream_disconnected", url=self.config.url, error=str(exc)[:200])
                return
            for item in self.splitter.feed(chunk):
                self._line(item)

    def _line(self, item: bytes | Overlong) -> None:
        self.counts["lines"] += 1
        where = f"{self.config.url} line {self.counts['lines']}"
        if isinstance(item, Overlong):
            self._reject(where, item.bytes, f"{where}: line of {item.bytes} bytes is over the "
                         f"{self.config.max_line_bytes}-byte limit; discarded up to the next newline")
            return
        if not item.strip():
            return
        if self._secret is not None:
            record = self._authentic(item, where)
            if record is None:
                return
            item = record
        try:
            fields = line_source.parse(item, where)
            if self.config.scanner:
                fields.setdefault("scanner", self.config.scanner)
            scan = build_scan(fields, where)
        except ScanRejected as exc:
            self._reject(where, len(item) + 1, exc.reason)
            return
        record_sha256 = line_source.record_sha256(item)
        prior = self.service.recorded(scan.key)
        if prior is not None and prior and prior != record_sha256:
            self._reject(where, len(item) + 1, f"{where}: scan {scan.scan_id!r} of scanner {scan.scanner!r} is "
                         "already recorded with different content; not counted (is the scanner reusing ids?)")
            return
        if prior is not None:
            self.counts["duplicates"] += 1
            self.ctx.log.info("xray_scan_already_stored", key=scan.key)
            return
        self.ctx.emit("xray.scan", scan.payload(format=line_source.FORMAT, record_sha256=record_sha256), "normal")
        self.service.emitted(scan.key, record_sha256)
        self.counts["emitted"] += 1

    def _authentic(self, line: bytes, where: str) -> bytes | None:
        """The record when the line's HMAC is right; else None, refused as an alarm."""
        match = _MAC.match(line)
        if match is None:
            self._reject(where, len(line) + 1, f"{where}: unauthenticated: no 'hmac-sha256=<hex> ' prefix; "
                         "refused (forged or misconfigured scanner)", "alarm")
            return None
        record = line[match.end():]
        want = hmac.new(self._secret, record, sha256).hexdigest().encode()
        if not hmac.compare_digest(want, match.group(1)):
            self._reject(where, len(line) + 1, f"{where}: unauthenticated: the HMAC does not match this record "
                         "under this scanner's secret; refused (forged or altered)", "alarm")
            return None
        return record

    def _reject(self, where: str, size: int, reason: str, priority: str = "normal") -> None:
        self.counts["rejected"] += 1
        self.ctx.log.warning("xray_record_rejected", where=where, reason=reason[:300])
        self.ctx.emit("xray.rejected", {"source": self.config.url, "line": self.counts["lines"],
                                        "bytes": size, "reason": reason[:500]}, priority)

    def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {"status": "ok" if self.connected else "degraded",
                                  "connected": self.connected, "url": self.config.url, **self.counts}
        if self._last_error:
            report["last_error"] = self._last_error
        return report
