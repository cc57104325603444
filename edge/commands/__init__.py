"""Commands: signed instructions from central and local ones from the device itself.

Public pieces: ``Command`` and ``CommandResult`` (the wire contract),
``CommandRouter`` (the daemon component) and ``local.send`` (the client of
the control socket, for the CLI and the gate policy). Resolved on first use so
that importing the settings section or the socket client stays cheap.
"""

from __future__ import annotations

__all__ = ["Command", "CommandResult", "CommandRouter"]

_LAZY = {"Command": "edge.commands.model", "CommandResult": "edge.commands.model",
         "CommandRouter": "edge.commands.router"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge.commands' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
