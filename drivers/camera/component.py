"""What the daemon adds when a ``camera.face`` driver is configured."""

from __future__ import annotations

import structlog

log = structlog.get_logger("edge.biometrics")


def components(daemon) -> list:
    """Point face drivers at the device's gallery; sync it from central when a broker is set.
    Nothing when no ``camera.face`` driver is configured."""
    if not any(d.kind == "camera.face" for d in daemon.settings.drivers):
        return []
    from drivers.camera import driver

    driver.DEFAULT_STATE_DIR = daemon.settings.state_dir
    if daemon.link is None:
        log.info("gallery_sync_off", reason="no MQTT broker configured; local enrollment only")
        return []
    from drivers.camera.sync import GallerySync

    return [GallerySync.for_daemon(daemon)]
