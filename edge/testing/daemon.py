"""``edge run`` in a subprocess, driven like systemd drives it (sd_notify READY)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        # JSON's string escapes (\n, \t, \", \\, \uXXXX) are all valid in a TOML basic string.
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def dump_toml(data: dict[str, Any]) -> str:
    """Enough TOML for edge configs: scalars, tables, arrays of tables."""
    lines, tables, arrays = [], [], []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_toml_value(value)}")
    for key, table in tables:
        lines += ["", f"[{_key(key)}]"] + [f"{_key(k)} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    for key, items in arrays:
        for item in items:
            lines += ["", f"[[{_key(key)}]]"] + [f"{_key(k)} = {_toml_value(v)}" for k, v in item.items()
                                                 if v is not None]
    return "\n".join(lines) + "\n"


class DaemonProcess:
    """Start, kill -9, stop and restart ``edge run`` on a config written for the test."""

    def __init__(self, workdir: Path, config: dict[str, Any], env: dict[str, str] | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        config.setdefault("state_dir", str(self.workdir / "state"))
        self.config = config
        self.config_path = self.workdir / "edge.toml"
        self.config_path.write_text(dump_toml(config))
        self.state_dir = Path(config["state_dir"])
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "daemon.log"
        self.starts = 0
        self.command = [sys.executable, "-m", "edge"]  # or a launcher (edge/update/boot.py)

    def cli(self, *args: str, check: bool = False, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run an ``edge`` CLI command against this daemon's config (``input``: what is typed)."""
        return subprocess.run([sys.executable, "-m", "edge", "--config", str(self.config_path), *args],
                              capture_output=True, text=True, check=check, timeout=timeout,
                              env={**os.environ, **self.env}, input=input,
                              stdin=subprocess.DEVNULL if input is None else None)

    def start(self, timeout: float = 30.0, wait_ready: bool = True) -> DaemonProcess:
        sock_path = self.workdir / f"notify-{self.starts}.sock"
        sock_path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(sock_path))
        env = {**os.environ, **self.env, "NOTIFY_SOCKET": str(sock_path)}
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*self.command, "--config", str(self.config_path), "run"],
                                     stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.starts += 1
        try:
            if wait_ready:
                self._wait_ready(sock, timeout)
        finally:
            sock.close()
            sock_path.unlink(missing_ok=True)
        return self

    def _wait_ready(self, sock: socket.socket, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"edge run exited with {self.proc.returncode}:\n{self.log_tail()}")
            sock.settimeout(min(0.5, max(0.01, deadline - time.monotonic())))
            try:
                if b"READY=1" in sock.recv(4096):
                    return
            except TimeoutError:
                continue
        raise TimeoutError(f"edge run not ready within {timeout}s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the power-cut test."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def restart(self, **kwargs) -> DaemonProcess:
        self.stop()
        return self.start(**kwargs)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
