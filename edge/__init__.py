"""edge: the daemon for prison gate hardware and in-cell tablets.

The public surface is deliberately small: the driver interface that third
parties implement, the event envelope, and the root error. Everything else is
internal and may change.

Names are resolved on first use (PEP 562) so that ``edge status`` and ``edge
events tail`` do not pay for importing pydantic on a slow device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["Driver", "DriverConfig", "DriverContext", "EdgeError", "Event", "__version__"]

_LAZY = {
    "Driver": "edge.driver", "DriverConfig": "edge.driver", "DriverContext": "edge.driver",
    "EdgeError": "edge.errors", "Event": "edge.events",
}

if TYPE_CHECKING:
    from edge.driver import Driver, DriverConfig, DriverContext
    from edge.errors import EdgeError
    from edge.events import Event


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
