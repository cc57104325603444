"""A client for the local API socket: used by the CLI (and the tests) to talk to the daemon."""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any

from edge.errors import EdgeError


class ApiUnavailable(EdgeError):
    """The daemon's local API socket cannot be reached (daemon stopped, or no permission)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        # A unix socket with a timeout fails at once (EAGAIN) while the listen backlog is full
        # (a burst): wait for room, up to the timeout, as a TCP connect would.
        deadline = time.monotonic() + (self.timeout or 0)
        while True:
            try:
                sock.connect(self._path)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    sock.close()
                    raise TimeoutError(f"{self._path}: listen backlog full") from None
                time.sleep(0.002)
        self.sock = sock


def socket_path(settings) -> Path:
    return Path(settings.localapi.socket_path or settings.state_dir / "api.sock")


def call(path: Path, method: str, url: str, body: Any = None, headers: dict | None = None,
         timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One request; returns (status, headers, body bytes)."""
    conn = _UnixConnection(str(path), timeout)
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    try:
        try:
            conn.request(method, url, body=data, headers=hdrs)
        except BrokenPipeError:
            if conn.sock is None:
                raise
            # The server refused before reading (503 at its connection cap, 413): its answer
            # is already in our receive buffer.
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    except FileNotFoundError:
        raise ApiUnavailable(f"no local API socket at {path}; is the daemon running "
                             "(systemctl status edge)?") from None
    except PermissionError:
        raise ApiUnavailable(f"permission denied on {path}; run as root or as the UI's group") from None
    except (ConnectionError, OSError) as exc:
        raise ApiUnavailable(f"local API at {path} did not answer: {exc}") from None
    finally:
        conn.close()


def call_json(path: Path, method: str, url: str, body: Any = None, **kw) -> tuple[int, Any]:
    status, _, raw = call(path, method, url, body, **kw)
    try:
        return status, json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return status, {"raw": raw[:200].decode(errors="replace")}
