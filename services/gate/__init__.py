"""The gate policy: each lane decides locally, online or offline, and every decision is explained.

``settings`` holds the ``[gate]`` config models, ``engine.GateEngine`` the
daemon component (one small state machine per person in a lane), ``store``
the restart-safe approach and mode state.
"""
