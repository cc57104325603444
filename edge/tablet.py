"""The tablet's components: the learning cache, the messaging cache and the UI's local API.

Built by the daemon for ``role = "tablet"``; the API starts last (after the
components that add routes to it) and so stops first.
"""

from __future__ import annotations


def tablet_components(daemon) -> list:
    from edge.learning.api import register as learning_routes
    from edge.learning.component import LearningComponent
    from edge.localapi.server import LocalApi

    s = daemon.settings
    api = LocalApi(s.localapi, s.state_dir)
    components: list = []
    if s.learning.enabled:
        learning = LearningComponent(daemon)
        learning_routes(api, learning)
        components.append(learning)
    components.append(api)
    return components
