"""What the daemon adds when a ``camera.face`` driver is configured."""

from __future__ import annotations

import structlog

log = structlog.get_logger("edge.biometrics")


def components(daemon) -> list:
    """The ``biometrics`` command target (a local staff enrolment, approved by a second operator),
    and the gallery sync from central when a broker is set (the face drivers find the gallery
    through their context's state_dir). Nothing when no ``camera.face`` driver is configured."""
    if not any(d.kind == "camera.face" for d in daemon.settings.drivers):
        return []
    from drivers.camera.staff import StaffEnrolment

    found: list = [StaffEnrolment(daemon, daemon.component("commands"))]
    if daemon.link is None:
        log.info("gallery_sync_off", reason="no MQTT broker configured; local enrollment only")
        return found
    from drivers.camera.sync import GallerySync

    return [*found, GallerySync.for_daemon(daemon)]
