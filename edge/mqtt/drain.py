"""``edge outbox drain``: sync the whole outbox in the foreground, with the daemon stopped.

For a field engineer reconnecting a device that was offline for weeks: the
same uplink the daemon runs, without drivers, until nothing is pending.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edge.config import Settings
from edge.mqtt.errors import MqttConfigError, MqttUnavailable

_CONNECT_WAIT_S = 30.0
_STALLED_S = 10.0  # refused and no progress this long: give up and say why


def drain(settings: Settings, *, timeout: float | None = None,
          on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Send every pending event; returns counts and rate. ``on_progress(acked, total)``."""
    from edge.mqtt.link import MqttLink
    from edge.store import Store

    store = Store(settings.state_dir, device=settings.device_id, site=settings.site, settings=settings.store)
    try:
        total = store.stats()["pending"]
        if total == 0:  # nothing to send: no broker needed, nothing to wait for
            return {"ok": True, "sent_events": 0, "pending_before": 0, "pending": 0, "seconds": 0.0,
                    "events_per_s": None, "broker": None, "refused_messages": 0, "last_refusal": None}
        if not settings.mqtt.brokers:
            raise MqttConfigError("mqtt.brokers is empty: there is no broker to drain the outbox to")
        link = MqttLink(settings, store, device_state=False)
        started = time.monotonic()
        link.start()
        try:
            wait = _CONNECT_WAIT_S if timeout is None else min(timeout, _CONNECT_WAIT_S)
            if not link.wait_connected(wait):
                err = link.status()["last_error"] or {}
                raise MqttUnavailable(
                    f"no broker answered within {wait:.0f} s; last error ({err.get('layer', '?')} layer, "
                    f"{err.get('broker', '?')}): {err.get('message', 'none')}; check `edge doctor`")
            acked = _wait_done(link, store, total, started, timeout, on_progress)
        finally:
            link.stop()
        elapsed = time.monotonic() - started
        remaining = store.stats()["pending"]
    finally:
        store.close()
    status = link.status()
    return {"ok": remaining == 0, "sent_events": acked, "pending_before": total, "pending": remaining,
            "seconds": round(elapsed, 3), "events_per_s": round(acked / elapsed) if elapsed else None,
            "broker": status["broker"], "refused_messages": status.get("refused_messages", 0),
            "last_refusal": status.get("last_refusal")}


def _wait_done(link, store, total: int, started: float, timeout: float | None, on_progress) -> int:
    """Until nothing is pending (events appended meanwhile count too) or the timeout."""
    last_check, last_progress, seen = 0.0, time.monotonic(), -1
    while True:
        acked = link.uplink.acker.committed
        if on_progress:
            on_progress(acked, total)
        now = time.monotonic()
        if acked != seen:
            seen, last_progress = acked, now
        elif link.uplink.counters["refused_messages"] and now - last_progress > _STALLED_S:
            return acked  # the broker keeps refusing: report it rather than wait forever
        if acked >= total and now - last_check > 0.2:
            last_check = now
            link.uplink.acker.flush(1.0)
            if store.stats()["pending"] == 0:
                return link.uplink.acker.committed
        if timeout is not None and now - started > timeout:
            return acked
        time.sleep(0.05)
