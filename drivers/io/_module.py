"""The Modbus module as the driver sees it: connect, read inputs, set a coil; errors become ours.

pymodbus's exceptions, error responses and connection failures all become
``ModuleSilent`` here, at the boundary, so the driver loop has one thing to
handle: the module did not do what we asked.
"""

from __future__ import annotations

import logging
import random

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.io.config import ModbusLink
from edge.errors import DriverError

# pymodbus logs every timeout at ERROR with packet dumps; our events and logs say it once.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class ModuleSilent(DriverError):
    """The I/O module did not answer, or answered with an error."""


class Module:
    def __init__(self, cfg: ModbusLink):
        self.cfg = cfg
        if cfg.transport == "tcp":
            self._client = ModbusTcpClient(cfg.host, port=cfg.tcp_port, timeout=cfg.reply_timeout_s, retries=0)
            self.where = f"{cfg.host}:{cfg.tcp_port}"
        else:
            self._client = ModbusSerialClient(cfg.serial_port, baudrate=cfg.baudrate,
                                              timeout=cfg.reply_timeout_s, retries=0)
            self.where = f"{cfg.serial_port}@{cfg.baudrate}"
        self._span = self._input_span()

    def _input_span(self) -> tuple[int, int]:
        addresses = self.cfg.input_map().values()
        return min(addresses), max(addresses) - min(addresses) + 1

    def connect(self) -> None:
        try:
            ok = self._client.connect()
        except (ModbusException, OSError) as exc:
            raise ModuleSilent(f"cannot connect to {self.where}: {exc}") from None
        if not ok:
            raise ModuleSilent(f"cannot connect to {self.where}")

    def close(self) -> None:
        try:
            self._client.close()
        except (ModbusException, OSError):
            pass

    def read_inputs(self) -> dict[str, bool]:
        """Every configured input by name, in one request."""
        start, count = self._span
        bits = self._call("read inputs", self._client.read_discrete_inputs, start, count=count,
                          device_id=self.cfg.unit).bits
        if len(bits) < count:  # a short reply would leave contacts unread: not an answer
            raise ModuleSilent(f"read inputs on {self.where}: the reply carries {len(bits)} inputs, "
                               f"{count} were asked for (from address {start})")
        return {name: bool(bits[addr - start]) for name, addr in self.cfg.input_map().items()}

    def set_coil(self, coil: int, on: bool) -> None:
        reply = self._call(f"set coil {coil}", self._client.write_coil, coil, on, device_id=self.cfg.unit)
        # The module echoes what it did: any other echo means this relay was not set as asked.
        bits = getattr(reply, "bits", None) or []
        address, level = getattr(reply, "address", None), bool(bits[0]) if bits else None
        if (address, level) != (coil, on):
            raise ModuleSilent(f"set coil {coil} {_onoff(on)} on {self.where}: the module confirmed "
                               f"coil {address} {_onoff(level)} instead")

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            reply = fn(*args, **kwargs)
        except (ModbusException, OSError, ValueError) as exc:
            raise ModuleSilent(f"{what} on {self.where}: {exc}") from None
        if reply is None or reply.isError():
            raise ModuleSilent(f"{what} on {self.where}: error response {reply!r}")
        return reply


def _onoff(level: bool | None) -> str:
    return {True: "on", False: "off"}.get(level, "(no level)")


def serve_module(cfg, ctx, serve, faulted) -> None:
    """A driver's run loop for one I/O module: connect, ``serve(module)`` until the module falls
    silent, report it with ``faulted(reason)``, then reconnect with jittered exponential back-off
    (``reconnect_initial_s`` .. ``reconnect_max_s``) until the driver is stopped."""
    delay = cfg.reconnect_initial_s
    while not ctx.stopping.is_set():
        module = Module(cfg)
        try:
            module.connect()
            serve(module)
            delay = cfg.reconnect_initial_s
        except ModuleSilent as exc:
            faulted(str(exc))
        finally:
            module.close()
        if ctx.wait(random.uniform(delay / 2, delay)):
            return
        delay = min(delay * 2, cfg.reconnect_max_s)
