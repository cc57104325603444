"""The MQTT link's status in one line of words, for ``edge status`` and ``edge doctor``."""

from __future__ import annotations

from typing import Any


def summary(s: dict[str, Any]) -> str:
    """One line for ``edge status``: where we are connected, whether acks flow, what went wrong."""
    if s["connected"]:
        text = f"connected to {s['broker']} since {s['connected_since']}"
    else:
        since = s.get("disconnected_since")
        text = ("DISCONNECTED" if s.get("connects") else "NOT CONNECTED yet") + (f" since {since}" if since else "")
        text += f", retrying (brokers: {', '.join(s['brokers'])})"
    text += f"; last PUBACK {s['last_puback_at'] or 'never'}"
    if "inflight_events" in s:
        text += f"; {s['inflight_events']} events in flight, {s['acked_events']} acked since start"
    if s.get("acks_kept_in_memory"):
        text += f"; {s['acks_kept_in_memory']} acks KEPT IN MEMORY (the store cannot record them: disk full?)"
    if s["refusals"]:
        ref = s.get("last_refusal") or {}
        text += f"; {s['refusals']} publishes REFUSED, last {ref.get('code')} {ref.get('reason')}"
    err = s["last_error"]
    if err:
        code = f" {err['code']}" if err.get("code") else ""
        text += f"; last error at {err['at']} ({err['layer']}{code}): {err['message']}"
    if not s["connected"]:
        text += "; check: edge doctor --only broker"
    return text
