"""The local control socket: field engineers and the gate policy send commands on the device.

``state_dir/control.sock`` is a unix stream socket, mode 0660: whoever may open
it is authorised (that is the access control, in place of signatures). The
protocol is JSON lines: one request object per line, one result object back.
The peer's uid (SO_PEERCRED) names the operator in the recorded result.

Request:  {"target": "lane1", "name": "grant", "args": {...}, "reason": "...", "id": optional}
Response: the command.result payload ({"id", "status": ok|failed|rejected, ...}),
          or {"status": "error", "detail": ...} when the daemon could not take it.

``{"op": "status"}`` instead returns ``{"status": "ok", "daemon": {...}}``: the daemon's
live status from memory, which `edge status` prefers to status.json (that file cannot
be rewritten on a full disk).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import socket
import struct
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import structlog

from edge._sockets import bind_unix
from edge.errors import CommandError, EdgeError

log = structlog.get_logger("edge.commands.local")
SOCKET_NAME = "control.sock"
_MAX_LINE = 64 * 1024
_MAX_CLIENTS = 16
_RESULT_TIMEOUT_S = 60.0


class ControlUnavailable(EdgeError):
    """The daemon's control socket cannot be reached (not running, or no permission)."""


def peer_user(conn: socket.socket) -> str:
    """The user name of the process at the other end of a unix socket."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


class ControlServer:
    """Accepts local clients on a thread; each request goes to ``submit(request, operator)``."""

    def __init__(self, state_dir: Path, submit, *, group: str | None = None, status=None):
        self.path = Path(state_dir) / SOCKET_NAME
        self._submit = submit
        self._status = status  # () -> the daemon's live status, for {"op": "status"}
        self._group = group
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(_MAX_CLIENTS)
        self._stopping = threading.Event()

    def start(self) -> None:
        try:
            sock = bind_unix(self.path, 0o660, self._set_group)
            sock.listen(_MAX_CLIENTS)
        except OSError as exc:
            raise ControlUnavailable(f"cannot create the control socket {self.path}: {exc}") from None
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="control-socket", daemon=True)
        self._thread.start()

    def _set_group(self, path: Path) -> None:
        if not self._group:
            return
        try:
            os.chown(path, -1, grp.getgrnam(self._group).gr_gid)
        except (KeyError, PermissionError) as exc:
            # Only engineers lose access (the daemon's own group keeps it): log, don't stop the gate.
            log.error("control_socket_group_not_set", group=self._group, error=str(exc) or "no such group")

    def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
            except OSError:
                pass
            self._sock.close()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # the listening socket was shut down
            if not self._slots.acquire(blocking=False):
                _send(conn, {"status": "error", "detail": "too many local clients; try again"})
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), name="control-client", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            operator = peer_user(conn)
            reader = conn.makefile("rb")
            while not self._stopping.is_set():
                line = reader.readline(_MAX_LINE + 1)
                if not line:
                    return
                _send(conn, self._answer(line, operator))
        except OSError:
            return  # client went away
        finally:
            conn.close()
            self._slots.release()

    def _answer(self, line: bytes, operator: str) -> dict[str, Any]:
        if len(line) > _MAX_LINE or not line.endswith(b"\n"):
            return {"status": "error", "detail": f"request line longer than {_MAX_LINE} bytes"}
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return {"status": "error", "detail": f"request is not valid JSON: {exc}"}
        if isinstance(request, dict) and request.get("op") == "status" and self._status is not None:
            # Read-only, from memory: `edge status` works when status.json cannot be written.
            return {"status": "ok", "daemon": self._status()}
        future = self._submit(request, operator)
        try:
            return future.result(_RESULT_TIMEOUT_S)
        except FutureTimeout:
            return {"status": "error", "detail": f"no result within {_RESULT_TIMEOUT_S:g}s; the command "
                    "may still run: see `edge events tail --type 'command.*'`"}
        except EdgeError as exc:
            return {"status": "error", "detail": str(exc)}


def _send(conn: socket.socket, obj: dict[str, Any]) -> None:
    conn.sendall(json.dumps(obj, default=str).encode() + b"\n")


def send(state_dir: str | os.PathLike, target: str, name: str, args: dict[str, Any] | None = None,
         reason: str | None = None, *, command_id: str | None = None, single_person: bool = False,
         timeout: float = _RESULT_TIMEOUT_S + 5) -> dict[str, Any]:
    """Send one command to the running daemon on this device and return its result.

    The result is the ``command.result`` payload: check ``status`` (ok | failed |
    rejected) and ``detail``. A barrier or erase command comes back ``rejected``
    (``under_signed``) with ``result.approval_id`` for a second operator's
    ``approve``. Raises ``ControlUnavailable`` when the daemon cannot be reached
    and ``CommandError`` when it could not take the command at all.
    """
    request: dict[str, Any] = {"target": target, "name": name, "args": args or {}}
    if reason:
        request["reason"] = reason
    if command_id:
        request["id"] = command_id
    if single_person:
        request["single_person"] = True
    return request_raw(state_dir, request, timeout)


def approve(state_dir: str | os.PathLike, approval_id: str, timeout: float = _RESULT_TIMEOUT_S + 5) -> dict[str, Any]:
    """Approve another operator's pending barrier/erase request; returns the command's result."""
    return request_raw(state_dir, {"approve": approval_id}, timeout)


def pending(state_dir: str | os.PathLike, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Requests waiting for a second operator."""
    return request_raw(state_dir, {"list_pending": True}, timeout)["pending"]


def request_raw(state_dir: str | os.PathLike, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One JSON request line to the control socket, one answer back."""
    path = Path(state_dir) / SOCKET_NAME
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlUnavailable(f"no control socket at {path}: is the daemon running? "
                                     "(systemctl status edge)") from None
        except PermissionError:
            from edge.access import denied_hint

            why = denied_hint(path, os.W_OK) or "run as the daemon's user or a member of its group"
            raise ControlUnavailable(f"permission denied on {path}: {why}") from None
        except ConnectionRefusedError:
            raise ControlUnavailable(f"{path} refuses connections: the daemon is not running "
                                     "(a stale socket after a crash)") from None
        sock.sendall(json.dumps(request).encode() + b"\n")
        line = sock.makefile("rb").readline(_MAX_LINE * 4)
    except TimeoutError:
        raise ControlUnavailable(f"no answer from the daemon within {timeout:g}s") from None
    finally:
        sock.close()
    if not line:
        raise ControlUnavailable("the daemon closed the control connection without an answer")
    reply = json.loads(line)
    if reply.get("status") == "error":
        raise CommandError(reply.get("detail") or "the daemon could not take the command")
    return reply
