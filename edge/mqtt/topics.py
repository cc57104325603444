"""The topic layout of the contract, in one place: ``edge/v1/{site}/{device}/...``.

Every topic the device publishes or subscribes to is built here, so the
AsyncAPI document and the code cannot disagree about a spelling.
"""

from __future__ import annotations

ROOT = "edge/v1"


def device_prefix(site: str, device: str) -> str:
    return f"{ROOT}/{site}/{device}"


def site_prefix(site: str) -> str:
    return f"{ROOT}/{site}"


def events(site: str, device: str, family: str) -> str:
    """Batches ``{"events": [...]}`` of one event family, QoS 1."""
    return f"{ROOT}/{site}/{device}/events/{family}"


def state(site: str, device: str) -> str:
    """Retained birth/death state of the device."""
    return f"{ROOT}/{site}/{device}/state"


def cmd(site: str, device: str) -> str:
    """Commands addressed to this device (inbound)."""
    return f"{ROOT}/{site}/{device}/cmd"


def site_cmd(site: str) -> str:
    """Commands addressed to every device of the site (inbound)."""
    return f"{ROOT}/{site}/cmd"


def cmd_result(site: str, device: str) -> str:
    """Results of commands (outbound, QoS 1)."""
    return f"{ROOT}/{site}/{device}/cmd/result"


#: First topic levels after ``edge/v1/{site}/`` that site-wide channels use. A device id equal
#: to one would make its device topics overlap the site's (``edge/v1/s/cmd/...``), so such ids
#: are refused at start and by the broker ACL generator. A test keeps this in step with the contract.
SITE_LEVEL_NAMES = frozenset({"cmd", "config", "gallery", "learning", "trust", "xray"})
