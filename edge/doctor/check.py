"""What every doctor check returns: one ``Check`` per finding (ok or not, what to do next)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

CHECK_NAMES = ("config", "store", "audit", "disk", "clock", "trust", "packages", "broker", "devices", "components")


@dataclass
class Check:
    check: str             # one of CHECK_NAMES
    ok: bool
    detail: str
    hint: str = ""
    target: str = ""       # a broker URI, a driver name, a path
    step: str = ""         # broker layer: dns | tcp | tls | mqtt | roundtrip

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v != ""}
