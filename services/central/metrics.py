"""Prometheus text exposition of the ingest: ``GET /metrics`` on a small HTTP server.

Counters come from the ingest itself; gaps and per-device last seen are read
from the database at scrape time (through the scraper's own connection), so
every process of the group reports the same service-wide figures.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from services.central.db import CentralDb, DbError

_COUNTERS = {
    "messages": "MQTT messages committed and acknowledged",
    "events_ingested": "Events stored (new)",
    "duplicates": "Events received again and ignored (at-least-once delivery)",
    "rejected": "Messages that could not be stored as events or state (kept in rejects)",
    "states": "Device state (birth/death) messages applied",
    "db_errors": "Database writes that failed and were retried",
    "dropped_qos0": "Messages received at QoS 0 and dropped (every device channel is QoS 1)",
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _epoch(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.timestamp()


def render(status: dict, db: CentralDb) -> str:
    lines = []
    for key, help_text in _COUNTERS.items():
        name = f"edge_central_{key}_total"
        lines += [f"# HELP {name} {help_text}.", f"# TYPE {name} counter", f"{name} {status[key]}"]
    lines += ["# HELP edge_central_lag_seconds Age of the newest event of the last committed batch.",
              "# TYPE edge_central_lag_seconds gauge",
              f"edge_central_lag_seconds {status['lag_s'] if status['lag_s'] is not None else 'NaN'}"]
    try:
        gaps = db.gaps()
        devices = db.devices()
    except DbError:
        lines.append("edge_central_db_up 0")
        return "\n".join(lines) + "\n"
    lines += ["edge_central_db_up 1",
              "# HELP edge_central_gaps Open sequence gaps (ranges of seqs not received).",
              "# TYPE edge_central_gaps gauge", f"edge_central_gaps {len(gaps)}",
              "# HELP edge_central_missing_events Events inside open gaps.",
              "# TYPE edge_central_missing_events gauge",
              f"edge_central_missing_events {sum(g['missing'] for g in gaps)}",
              "# HELP edge_central_device_last_seen_timestamp_seconds When central last received from the device.",
              "# TYPE edge_central_device_last_seen_timestamp_seconds gauge"]
    for d in devices:
        seen = _epoch(d["last_seen"])
        if seen is not None:
            lines.append(f'edge_central_device_last_seen_timestamp_seconds{{site="{_label(d["site"])}",'
                         f'device="{_label(d["device"])}"}} {seen:.3f}')
    online = sum(1 for d in devices if d["online"])
    lines += ["# TYPE edge_central_devices_online gauge", f"edge_central_devices_online {online}"]
    return "\n".join(lines) + "\n"


def serve(listen: str, status: Callable[[], dict], db_factory: Callable[[], CentralDb]) -> ThreadingHTTPServer:
    """Start ``/metrics`` on ``host:port`` in a daemon thread; returns the server (``.shutdown()``)."""
    host, _, port = listen.rpartition(":")
    lock = threading.Lock()
    db = db_factory()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            with lock:  # one scrape at a time on the scraper's connection
                body = render(status(), db).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass  # scrapes every few seconds must not flood the log

    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    threading.Thread(target=server.serve_forever, name="central-metrics", daemon=True).start()
    return server
