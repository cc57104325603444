"""Plug-ins, found through entry-point groups: driver kinds (``edge.drivers``) and what services
and driver families add to the core (settings sections, payloads, channels, components, CLI).

Built-in services and drivers are declared in pyproject.toml exactly as a third party's would
be; nothing is imported until it is used.
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


def registered(group: str) -> list[EntryPoint]:
    """Every entry point of ``group`` (``edge.settings``, ``edge.components``, ...), by name."""
    return sorted(entry_points(group=group), key=lambda ep: ep.name)
