"""HTTP over a unix socket for the tablet UI, on the standard library.

Why the standard library (``http.server``'s request parsing over AF_UNIX, with
our own connection handling in ``_serve``): the API is a handful of JSON routes
and one file route for a single local client; a framework would add an ASGI
server, an event loop beside our threads, and a larger attack surface on a
device that must stay small. The socket's file permissions (mode 0660 and the
UI's group) let only the UI app's user open it; resident routes also need a
session (services.residents). Limits: body (413), headers (431), JSON depth (400),
request and idle timeouts (408), connections and workers (503): see ``_serve``.

Routes are registered by the tablet components (learning, messaging) with
``add_route``; a handler takes a ``Request`` and returns a ``Response`` or
raises ``ApiError``.
"""

from __future__ import annotations

import grp
import io
import json
import os
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from edge._sockets import bind_unix
from edge.errors import EdgeError
from edge.localapi._serve import Limits, Serve
from edge.localapi.settings import LocalApiSettings

log = structlog.get_logger("edge.localapi")
_BLOCK = 64 * 1024


class ApiError(EdgeError):
    """A request the local API refuses; carries the HTTP status and a stable error code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Any
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    max_depth: int = 32

    def json(self) -> Any:
        try:
            doc = json.loads(self.body or b"null", parse_constant=_no_constant, parse_float=_finite)
        except RecursionError:
            doc = None
            depth = self.max_depth + 1
        except ValueError as exc:  # bad JSON or UTF-8, NaN/Infinity, a number of over 4300 digits
            raise ApiError(400, "bad_json", f"request body is not valid JSON: {str(exc)[:200]}") from None
        else:
            depth = _depth(doc, self.max_depth + 1)
        if depth > self.max_depth:
            raise ApiError(400, "too_deep", f"request JSON is nested deeper than {self.max_depth} levels")
        return doc


def _depth(doc: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, counted without recursion, stopping at ``limit``."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth)
            if deepest >= limit:
                return deepest
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:40]} is out of range for a number")
    return value


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    file: tuple[Path, int, int] | None = None  # (path, offset, length): streamed, not loaded


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(obj, default=str).encode(), headers=headers or {})


Handler = Callable[[Request], Response]


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern, Handler]] = []
        self.patterns: list[tuple[str, str]] = []  # (method, pattern) as registered: for the docs

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """``pattern`` like ``/v1/learning/content/{sha256}``; a segment never spans '/'."""
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self._routes.append((method, re.compile(f"^{regex}$"), handler))
        self.patterns.append((method, pattern))

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = False
        for m, regex, handler in self._routes:
            match = regex.match(path)
            if match:
                if m == method:
                    return handler, {k: unquote(v) for k, v in match.groupdict().items()}
                allowed = True
        if allowed:
            raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}")
        raise ApiError(404, "not_found", f"no such endpoint: {path} (see docs/openapi.json)")


@dataclass
class _Server:
    """What a handler needs from the server: the routes and the limits."""

    router: Router
    max_body: int
    max_depth: int


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    @classmethod
    def serve_one(cls, server: _Server, sock: socket.socket, request: bytes) -> bool:
        """Answer one complete request read by ``_serve``; True to keep the connection."""
        handler = cls.__new__(cls)
        handler.server, handler.connection, handler.request, handler.client_address = server, sock, sock, ""
        handler.rfile = io.BytesIO(request)
        handler.wfile = sock.makefile("wb")
        handler.close_connection = True
        try:
            handler.handle_one_request()
            handler.wfile.flush()
        finally:
            handler.wfile.close()
        return not handler.close_connection

    def log_message(self, format: str, *args) -> None:
        pass  # request lines may carry resident pseudonyms; we log outcomes below instead

    def address_string(self) -> str:
        return "unix"

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

    def _dispatch(self) -> None:
        try:
            response = self._handle()
        except ApiError as exc:
            response = json_response({"error": {"code": exc.code, "message": exc.message}},
                                     exc.status, exc.headers)
        self._send(response)

    def _handle(self) -> Response:
        url = urlsplit(self.path)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "bad_request", "Content-Length is not a number") from None
        if length < 0 or length > self.server.max_body:
            self.close_connection = True
            raise ApiError(413, "too_large", f"request body of {length} bytes exceeds "
                                             f"the limit of {self.server.max_body}")
        body = self.rfile.read(length) if length else b""
        method = "GET" if self.command == "HEAD" else self.command
        handler, params = self.server.router.resolve(method, url.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        request = Request(self.command, url.path, query, self.headers, body, params)
        request.max_depth = self.server.max_depth
        response = handler(request)
        log.debug("api_request", method=self.command, route=url.path.split("/")[2:4],
                  status=response.status)
        return response

    def _send(self, response: Response) -> None:
        length = response.file[2] if response.file else len(response.body)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        if response.file:
            self._stream(*response.file)
        else:
            self.wfile.write(response.body)

    def _stream(self, path: Path, offset: int, length: int) -> None:
        with open(path, "rb") as f:
            f.seek(offset)
            while length > 0:
                block = f.read(min(_BLOCK, length))
                if not block:
                    break
                self.wfile.write(block)
                length -= len(block)


class LocalApi:
    """The daemon component serving the UI socket; other components add routes first."""

    name = "localapi"

    def __init__(self, settings: LocalApiSettings, state_dir: Path):
        self.settings = settings
        self.path = Path(settings.socket_path or Path(state_dir) / "api.sock")
        self.router = Router()
        self._serve: Serve | None = None
        self._thread: threading.Thread | None = None

    def add_route(self, method: str, pattern: str, handler: Handler) -> None:
        self.router.add(method, pattern, handler)

    def start(self) -> None:
        listener = bind_unix(self.path, self.settings.mode, self._set_group)
        s = self.settings
        _raise_fd_limit(s.max_connections * 2 + 256)
        server = _Server(self.router, s.max_body_bytes, s.max_json_depth)
        limits = Limits(max_connections=s.max_connections, workers=s.workers, queue=s.max_connections,
                        backlog=s.backlog, request_timeout_s=s.request_timeout_s, idle_timeout_s=s.idle_timeout_s,
                        max_body=s.max_body_bytes)
        self._serve = Serve(listener, limits, lambda sock, req: _Handler.serve_one(server, sock, req))
        # No periodic wake-ups while idle (a tablet spends its life idle): the selector sleeps
        # until a connection, a deadline, or stop() writes to its wake-up socket.
        self._thread = threading.Thread(target=self._serve.run, name="localapi", daemon=True)
        self._thread.start()
        log.info("localapi_listening", socket_path=str(self.path), mode=oct(self.settings.mode),
                 max_connections=s.max_connections, workers=s.workers)

    def _set_group(self, path: Path) -> None:
        if self.settings.group:
            try:
                os.chown(path, -1, grp.getgrnam(self.settings.group).gr_gid)
            except (KeyError, PermissionError) as exc:
                raise EdgeError(f"localapi.group: cannot give the socket to group "
                                f"{self.settings.group!r}: {exc}") from None

    def stop(self) -> None:
        if self._serve:
            self._serve.stop()
            if self._thread:
                self._thread.join(timeout=5)
            self._serve.listener.close()
            self.path.unlink(missing_ok=True)
            self._serve = None

    def status(self) -> dict[str, Any]:
        out = {"socket": str(self.path), "listening": self._serve is not None}
        if self._serve is not None:
            out.update(self._serve.stats())
        return out


def _raise_fd_limit(wanted: int) -> None:
    """Room for the connection cap (systemd's default soft limit is 1024); never above the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range -> (offset, length); None means the whole file. 416 if unsatisfiable."""
    if not header:
        return None
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or match.group(1) == match.group(2) == "":
        raise ApiError(416, "bad_range", f"unsupported Range {header!r}; expected one 'bytes=START-END'",
                       {"Content-Range": f"bytes */{size}"})
    first, last = match.groups()
    if first == "":
        length = min(int(last), size)
        start = size - length
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        length = end - start + 1
    if start >= size or length <= 0:
        raise ApiError(416, "range_not_satisfiable", f"range {header!r} is outside the {size} bytes",
                       {"Content-Range": f"bytes */{size}"})
    return start, length


def file_response(path: Path, size: int, content_type: str, range_header: str | None) -> Response:
    """The whole file (200) or one range of it (206), streamed from disk."""
    wanted = parse_range(range_header, size)
    headers = {"Accept-Ranges": "bytes"}
    if wanted is None:
        return Response(200, content_type=content_type, headers=headers, file=(path, 0, size))
    start, length = wanted
    headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    return Response(206, content_type=content_type, headers=headers, file=(path, start, length))
