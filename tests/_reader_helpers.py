"""OSDP reader harness: libosdp's own PD on a pty, our ``reader.osdp`` driver in a real thread."""

from __future__ import annotations

import queue
import threading

import structlog

from drivers.readers.contract import EVENT_PAYLOADS
from drivers.readers.driver import OsdpReaderConfig, OsdpReaderDriver
from drivers.sim.osdp_pd import OsdpReaderSim
from edge.driver import DriverContext
from tests._driver_events import EventRecorder

KEY = bytes(range(16))
FAST = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.4, "command_timeout_s": 3.0}


def key_file(tmp_path, key: bytes = KEY, mode: int = 0o600):
    path = tmp_path / f"reader-{key.hex()[:6]}.key"
    path.write_text(key.hex() + "\n")
    path.chmod(mode)
    return path


class ReaderLane(EventRecorder):
    """A libosdp PD (``sim``) on a pty and our driver (``driver``); events collected in order."""

    def __init__(self, tmp_path, *, pd_key: bytes | None = KEY, cp_key: bytes | None = KEY,
                 pd_install_mode: bool = False, **cfg):
        self.path = tmp_path / "tty-osdp"
        self.sim = OsdpReaderSim(self.path, address=5, key=pd_key, install_mode=pd_install_mode).start()
        options = {**FAST, **cfg}
        if cp_key is not None:
            options["key_file"] = key_file(tmp_path, cp_key)
        self.config = OsdpReaderConfig(name="reader1", kind="reader.osdp", port=str(self.path),
                                       baudrate=115200, address=5, **options)
        EventRecorder.__init__(self, EVENT_PAYLOADS)
        self.stopping = threading.Event()
        ctx = DriverContext("reader1", self._emit, structlog.get_logger("test"), self.stopping)
        self.driver = OsdpReaderDriver(self.config, ctx)
        self._thread = threading.Thread(target=self.driver.run, daemon=True)


    def start(self) -> ReaderLane:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(10)
        self.driver.close()
        try:
            self.sim.stop()
        except RuntimeError:
            pass  # already stopped by the test


    def pd_commands(self, count: int, timeout: float = 5.0) -> list[dict]:
        got = []
        for _ in range(count):
            try:
                got.append(self.sim.commands.get(timeout=timeout))
            except queue.Empty:
                break
        return got
