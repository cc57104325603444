"""libosdp's refresh loop at a chosen tick, for both ends of the link (CP and PD).

The Python binding's own loop sleeps a fixed 20 ms between refreshes, and every OSDP
exchange waits for those ticks (see ``refresh_interval_s`` in the reader's config).
"""

from __future__ import annotations


class TickingRefresh:
    """Mixed into ``osdp.ControlPanel`` or ``osdp.PeripheralDevice``: ``refresh_s`` between refreshes."""

    def __init__(self, *args, refresh_s: float, **kwargs):
        self._refresh_s = refresh_s
        super().__init__(*args, **kwargs)

    def refresh(self, event, lock, ctx) -> None:  # the binding's start() runs self.refresh(event, lock, ctx)
        while not event.is_set():
            with lock:
                ctx.refresh()
            event.wait(self._refresh_s)
