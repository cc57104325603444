"""The tablet's components: resident login, the learning cache, the messaging cache, the UI's local API.

Built by the daemon for ``role = "tablet"``; the API starts last (after the
components that add routes to it) and so stops first.
"""

from __future__ import annotations

import re


def components(daemon) -> list:
    """What a tablet runs (none on a gate): registered under the ``edge.components`` entry point."""
    if daemon.settings.role != "tablet":
        return []
    from edge.localapi.server import LocalApi
    from services.learning.api import register as learning_routes
    from services.learning.component import LearningComponent
    from services.messaging.api import register as messaging_routes
    from services.messaging.component import MessagingComponent
    from services.residents.api import register as session_routes
    from services.residents.component import ResidentsComponent

    s = daemon.settings
    api = LocalApi(s.localapi, s.state_dir)
    residents = ResidentsComponent(daemon)
    session_routes(api, residents)
    components: list = [residents]
    if s.learning.enabled:
        learning = LearningComponent(daemon)
        learning_routes(api, learning, residents.sessions)
        components.append(learning)
    if s.messaging.enabled:
        messaging = MessagingComponent(daemon)
        messaging_routes(api, messaging, residents.sessions)
        _register_purge(daemon.component("commands"), messaging, residents)
        components.append(messaging)
    components.append(api)
    return components


components.order = 10  # first after the router: its components subscribe on the link


def _register_purge(router, messaging, residents=None) -> None:
    """``purge_resident`` is a command to target ``edge``: the command router verifies it
    (an ``erase``: two signatures, or two local operators; expiry, replay) and records the
    result; here is only what it does."""
    from edge.errors import CommandError
    from edge.schema import PSEUDONYM

    def purge_resident(daemon, args: dict) -> dict:
        resident = args.get("resident")
        if not isinstance(resident, str) or not re.fullmatch(PSEUDONYM, resident):
            raise CommandError("args.resident must be the resident's pseudonym")
        if residents is not None:
            residents.purged(resident)  # their sessions end with their mailbox
        return {"purged": messaging.purge_resident(resident)}

    router.add_builtin("purge_resident", purge_resident, "erase")  # destroys a mailbox: two people
