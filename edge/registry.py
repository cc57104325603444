"""Driver kinds, found through the ``edge.drivers`` entry-point group.

Built-in drivers are declared in pyproject.toml exactly as a third party's
would be; nothing is imported until a kind is used.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points

from edge.errors import UnknownDriverKind

GROUP = "edge.drivers"


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def kinds() -> dict[str, str]:
    """kind -> 'module:attr' of every registered driver, without importing them."""
    return {name: ep.value for name, ep in sorted(_entry_points().items())}


def driver_class(kind: str):
    ep = _entry_points().get(kind)
    if ep is None:
        known = ", ".join(sorted(_entry_points())) or "none installed"
        raise UnknownDriverKind(f"unknown driver kind {kind!r}; registered kinds: {known}")
    return ep.load()
