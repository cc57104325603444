"""The tablet's components: resident login, the learning cache, the messaging cache, the UI's local API.

Built by the daemon for ``role = "tablet"``; the API starts last (after the
components that add routes to it) and so stops first.
"""

from __future__ import annotations

import re


def tablet_components(daemon) -> list:
    from edge.learning.api import register as learning_routes
    from edge.learning.component import LearningComponent
    from edge.localapi.server import LocalApi
    from edge.messaging.api import register as messaging_routes
    from edge.messaging.component import MessagingComponent
    from edge.residents.api import register as session_routes
    from edge.residents.component import ResidentsComponent

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
        _register_purge(messaging, residents)
        components.append(messaging)
    components.append(api)
    return components


def _register_purge(messaging, residents=None) -> None:
    """``purge_resident`` is a command to target ``edge``: the command router verifies it
    (an ``erase``: two signatures, or two local operators; expiry, replay) and records the
    result; here is only what it does."""
    from edge.commands.builtin import BUILTIN_EFFECTS, BUILTINS
    from edge.errors import CommandError
    from edge.messaging._docs import PSEUDONYM

    def purge_resident(daemon, args: dict) -> dict:
        resident = args.get("resident")
        if not isinstance(resident, str) or not re.match(PSEUDONYM, resident):
            raise CommandError("args.resident must be the resident's pseudonym")
        if residents is not None:
            residents.purged(resident)  # their sessions end with their mailbox
        return {"purged": messaging.purge_resident(resident)}

    BUILTINS["purge_resident"] = purge_resident
    BUILTIN_EFFECTS["purge_resident"] = "erase"  # destroys a resident's mailbox: two people
