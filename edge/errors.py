"""One rooted hierarchy for every error edge raises on purpose.

Dependencies' errors (sqlite3, serial, paho) are converted into these at the
boundary of the module that calls them, so callers catch ours only.
"""


class EdgeError(Exception):
    """Root of every error edge raises on purpose."""


class ConfigError(EdgeError):
    """The configuration is invalid; ``lines`` holds one readable line per problem."""

    def __init__(self, lines: list[str]):
        self.lines = list(lines)
        super().__init__("; ".join(self.lines))


class StoreError(EdgeError):
    """The local event store could not do what was asked."""


class StoreFull(StoreError):
    """The store is at its size cap and this event's priority may not evict anything."""


class StoreClosed(StoreError):
    """The store has been closed; no more appends are accepted."""


class EventInvalid(EdgeError):
    """An event does not match the envelope contract."""


class DriverError(EdgeError):
    """A driver failed in a way it reports to its caller."""


class UnknownDriverKind(EdgeError):
    """No driver is registered under this kind."""


class CommandError(EdgeError):
    """A command could not be executed (unknown, refused, or failed)."""


class StoreNoSpace(StoreFull):
    """The disk itself is full: the commit failed for space (alarms are kept in memory)."""
