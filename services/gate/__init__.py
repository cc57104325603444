"""The gate policy: each lane decides locally, online or offline, and every decision is explained.

``settings`` holds the ``[gate]`` config models, ``engine.GateEngine`` the
daemon component (one small state machine per person in a lane), ``store``
the restart-safe approach and mode state.
"""


def components(daemon) -> list:
    """The gate policy engine on a gate with lanes: after the command router (it registers the
    ``gate`` command target there) and the x-ray service (it asks for dose checks). Here, not in
    ``engine``: a tablet loads this factory too, and must not import the engine to hear "none"."""
    if daemon.settings.role != "gate" or not daemon.settings.gate.lanes:
        return []
    from services.gate.engine import GateEngine

    return [GateEngine(daemon, daemon.component("commands"))]


components.order = 30
