"""What the daemon adds when a ``camera.face`` driver is configured."""

from __future__ import annotations

import structlog

log = structlog.get_logger("edge.biometrics")


def components(daemon) -> list:
    """Sync the device's gallery from central when a broker is set (the face drivers find it
    through their context's state_dir). Nothing when no ``camera.face`` driver is configured."""
    if not any(d.kind == "camera.face" for d in daemon.settings.drivers):
        return []
    if daemon.link is None:
        log.info("gallery_sync_off", reason="no MQTT broker configured; local enrollment only")
        return []
    from drivers.camera.sync import GallerySync

    return [GallerySync.for_daemon(daemon)]
