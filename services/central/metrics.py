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

import structlog

from services.central._base import GAP_MAX_MISSING, by_device
from services.central.db import CentralDb, DbError

log = structlog.get_logger("edge.central.metrics")

_COUNTERS = {
    "messages": "MQTT messages committed and acknowledged",
    "events_ingested": "Events stored (new)",
    "duplicates": "Events received again and ignored (at-least-once delivery)",
    "rejected": "Messages that could not be stored as events or state (kept in rejects, or only "
                "counted past their device's reject budget)",
    "rejects_truncated": "Rejects kept with only the head of their payload (device over its reject bytes)",
    "rejects_unstored": "Rejects counted and not stored (device over its reject count)",
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


def _device(site: str, device: str) -> str:
    return f'site="{_label(site)}",device="{_label(device)}"'


def _gap_lines(report: dict, sites: dict[str, str], flagged: set[str] | None) -> list[str]:
    """Estate-wide gap figures of the plausible devices, and each device's own, implausible ones named."""
    max_missing = report["max_missing"]
    lines = ["# HELP edge_central_gaps Open sequence gaps (ranges of seqs not received), plausible devices.",
             "# TYPE edge_central_gaps gauge", f"edge_central_gaps {report['gaps']}",
             f"# HELP edge_central_missing_events Events inside open gaps of the devices missing at most "
             f"{max_missing} (--gap-max-missing).",
             "# TYPE edge_central_missing_events gauge", f"edge_central_missing_events {report['missing']}",
             "# HELP edge_central_devices_with_gaps Devices with an open gap (plausible ones).",
             "# TYPE edge_central_devices_with_gaps gauge",
             f"edge_central_devices_with_gaps {len(report['devices']) - len(report['implausible'])}",
             "# HELP edge_central_implausible_gap_devices Devices missing more events than one could produce.",
             "# TYPE edge_central_implausible_gap_devices gauge",
             f"edge_central_implausible_gap_devices {len(report['implausible'])}",
             "# HELP edge_central_device_missing_events Events inside the device's open gaps.",
             "# TYPE edge_central_device_missing_events gauge"]
    for name, d in sorted(report["devices"].items()):
        lines.append(f"edge_central_device_missing_events{{{_device(sites.get(name, ''), name)}}} {d['missing']}")
    lines += ["# HELP edge_central_device_gap_implausible 1: the device's gaps are over --gap-max-missing "
             "(a seq jump no device produces by working), left out of edge_central_missing_events.",
              "# TYPE edge_central_device_gap_implausible gauge"]
    for name in sorted(report["implausible"]):
        lines.append(f"edge_central_device_gap_implausible{{{_device(sites.get(name, ''), name)}}} 1")
        if flagged is not None and name not in flagged:
            flagged.add(name)
            log.warning("central_gap_implausible", device=name, site=sites.get(name),
                        missing=report["devices"][name]["missing"], max_missing=max_missing,
                        reason="more events missing than a device produces; left out of "
                               "edge_central_missing_events (see `edge central gaps`)")
    if flagged is not None:
        flagged.intersection_update(report["implausible"])  # a device that recovers is logged again later
    return lines


def render(status: dict, db: CentralDb, max_missing: int = GAP_MAX_MISSING,
           flagged: set[str] | None = None) -> str:
    """The exposition text. ``flagged``: devices already logged as implausible (kept by the caller)."""
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
    lines += ["edge_central_db_up 1", *_gap_lines(by_device(gaps, max_missing),
                                                  {d["device"]: d["site"] for d in devices}, flagged)]
    lines += ["# HELP edge_central_device_last_seen_timestamp_seconds When central last received from the device.",
              "# TYPE edge_central_device_last_seen_timestamp_seconds gauge"]
    for d in devices:
        seen = _epoch(d["last_seen"])
        if seen is not None:
            lines.append(f'edge_central_device_last_seen_timestamp_seconds{{site="{_label(d["site"])}",'
                         f'device="{_label(d["device"])}"}} {seen:.3f}')
    online = sum(1 for d in devices if d["online"])
    lines += ["# TYPE edge_central_devices_online gauge", f"edge_central_devices_online {online}"]
    lines += _over_budget(status.get("rejects_over_budget", {}))
    return "\n".join(lines) + "\n"


def _over_budget(per_device: dict[tuple[str, str], dict[str, int]]) -> list[str]:
    """Per device past its reject budget (this process, since it started)."""
    lines = []
    for kind, help_text in (("truncated", "Rejects of the device kept with only the head of their payload."),
                            ("unstored", "Rejects of the device counted and not stored.")):
        name = f"edge_central_device_rejects_{kind}_total"
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        lines += [f"{name}{{{_device(site, device)}}} {n[kind]}" for (site, device), n in sorted(per_device.items())]
    return lines


def serve(listen: str, status: Callable[[], dict], db_factory: Callable[[], CentralDb],
          max_missing: int = GAP_MAX_MISSING) -> ThreadingHTTPServer:
    """Start ``/metrics`` on ``host:port`` in a daemon thread; returns the server (``.shutdown()``)."""
    host, _, port = listen.rpartition(":")
    lock = threading.Lock()
    db = db_factory()
    flagged: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            with lock:  # one scrape at a time on the scraper's connection
                body = render(status(), db, max_missing, flagged).encode()
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
