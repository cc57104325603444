"""edge: the daemon for prison gate hardware and in-cell tablets.

The public surface is deliberately small: the driver interface that third
parties implement, the event envelope, and the root error. Everything else is
internal and may change.
"""

from edge.driver import Driver, DriverConfig, DriverContext
from edge.errors import EdgeError
from edge.events import Event

__version__ = "0.1.0"

__all__ = ["Driver", "DriverConfig", "DriverContext", "EdgeError", "Event", "__version__"]
