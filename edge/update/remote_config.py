"""Signed remote configuration: a versioned, expiring document from central that changes
a few allowlisted keys of the local config file.

The local TOML file stays the base. The accepted document is written beside it
(``edge.toml`` -> ``edge.remote.json``, the previous one kept as
``edge.remote.good.json``) and laid over the file every time the config is loaded,
after its signature is checked again. Verification is a checklist, one refusal code
each, reported in the ``config.refused`` alarm:

- not_json | not_object | signature | schema | wrong_site (``edge.signing.open_signed``)
- wrong_device: addressed to another device of the site
- expired | not_yet_valid: outside issued_at - clock_skew .. expires_at
- replayed: version not above the last applied one (or rolled back before)
- not_allowed: a key outside ``REMOTE_KEYS`` (the allowlist in the schema)
- unknown_driver: ``drivers.NAME.…`` for a driver this device does not have
- invalid: the merged config fails the same settings models as the local file
"""

from __future__ import annotations

import copy
import fnmatch
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from edge.errors import EdgeError

log = structlog.get_logger("edge.remote_config")

# The one place that names the document type; edge.trust.DOCUMENT_ROLES maps it to the role
# its signers need ("config"): a command, catalog or gallery key cannot sign a config.
DOCUMENT_TYPE = "config"

# What central may change remotely. Everything else (trust keys, update channel, paths,
# device identity, this allowlist) can only be changed on the device.
REMOTE_KEYS = (
    "logging.level",
    "store.retention_hours",
    "store.retention_bytes",
    "mqtt.brokers",
    "mqtt.keepalive_s",
    "update.check_interval_s",
    "update.rollout_group",
    "drivers.*.rate",  # a heartbeat's event rate, a reader's card-read limit
    "drivers.*.burst",  # a reader's card reads at once
)
RECORD = "remote-config.json"


class ConfigRefused(EdgeError):
    """A remote config document was refused; ``problem`` is the refusal code."""

    def __init__(self, problem: str, detail: str):
        super().__init__(f"config document refused ({problem}): {detail}")
        self.problem, self.detail = problem, detail


class ConfigDocument(BaseModel):
    """What central signs: the changed keys (dotted paths) and their new values."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["config"]
    site: str
    device: str | None = Field(default=None, description="None: every device of the site.")
    version: int = Field(ge=1, description="Strictly increasing per device.")
    issued_at: datetime
    expires_at: datetime
    settings: dict[str, Any] = Field(description='e.g. {"drivers.lane1.rate": 5, "logging.level": "debug"}')
    signatures: list[dict[str, Any]]


def remote_path(config_path: Path) -> Path:
    return config_path.with_name(f"{config_path.stem}.remote.json")


def good_path(config_path: Path) -> Path:
    return config_path.with_name(f"{config_path.stem}.remote.good.json")


def read_record(state_dir: Path) -> dict:
    try:
        return json.loads((Path(state_dir) / RECORD).read_text())
    except (FileNotFoundError, ValueError):
        return {"applied": 0, "pending": None, "failed": []}


def write_record(state_dir: Path, record: dict) -> None:
    from edge._fs import atomic_write

    atomic_write(Path(state_dir) / RECORD, json.dumps(record, sort_keys=True).encode(), 0o600)


def affected(keys: list[str]) -> tuple[set[str], bool]:
    """(driver names to restart, whether the daemon itself must restart)."""
    restart, daemon = set(), False
    for key in keys:
        section, _, rest = key.partition(".")
        if section == "drivers":
            restart.add(rest.split(".")[0])
        else:
            daemon = True
    return restart, daemon


def merge(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The local TOML data with the document's dotted keys laid over it (a copy)."""
    out = copy.deepcopy(data)
    for key, value in changes.items():
        parts = key.split(".")
        if parts[0] == "drivers":
            entry = next((d for d in out.get("drivers", []) if d.get("name") == parts[1]), None)
            if entry is None:
                raise ConfigRefused("unknown_driver", f"{key}: this device has no driver {parts[1]!r}")
            entry[parts[2]] = value
            continue
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def check_allowed(doc: ConfigDocument) -> None:
    for key in doc.settings:
        if not any(fnmatch.fnmatchcase(key, pattern) for pattern in REMOTE_KEYS) or key.count(".") > 2:
            raise ConfigRefused("not_allowed", f"{key!r} may not be changed remotely; allowed: "
                                f"{', '.join(REMOTE_KEYS)}")


def plaintext_problem(data: dict[str, Any], changes: dict[str, Any]) -> str | None:
    """Why ``changes`` would take the broker connection out of TLS, or None.

    ``mqtt.brokers`` is remote so central can move brokers, not so one config key can
    point the device at a plaintext broker: what the device sends (and its broker
    password) would cross the prison network in clear, to any host. A plaintext
    broker is allowed remotely only where the local file already uses one (a lab).
    """
    from urllib.parse import urlsplit

    brokers = changes.get("mqtt.brokers")
    if not isinstance(brokers, list):
        return None
    local = (data.get("mqtt") or {}).get("brokers") or []
    if any(isinstance(u, str) and urlsplit(u).scheme == "mqtt" for u in local):
        return None
    plain = [u for u in brokers if not (isinstance(u, str) and urlsplit(u).scheme == "mqtts")]
    if not plain:
        return None
    return (f"mqtt.brokers: {plain!r} would leave TLS; the local config uses only mqtts:// brokers, and a "
            "remote document may not turn TLS off (change the local file to allow a plaintext broker)")


def check_time(doc: ConfigDocument, skew_s: float, now: datetime) -> None:
    if now > doc.expires_at:
        raise ConfigRefused("expired", f"expired at {doc.expires_at.isoformat()}")
    if doc.issued_at - timedelta(seconds=skew_s) > now:
        raise ConfigRefused("not_yet_valid", f"issued at {doc.issued_at.isoformat()}, in the future")


def open_document(raw: bytes | str, trusted, *, site: str, device: str) -> ConfigDocument:
    """Signature, schema, addressee: what any stored or received document must pass."""
    from edge.signing import DocumentRejected, open_signed

    try:
        doc = open_signed(raw, trusted, ConfigDocument, f"{DOCUMENT_TYPE} document", site=site)
    except DocumentRejected as exc:
        raise ConfigRefused(exc.problem, exc.detail) from None
    if doc.device is not None and doc.device != device:
        raise ConfigRefused("wrong_device", f"addressed to device {doc.device!r}, this is {device!r}")
    return doc


def overlay(config_path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """What ``load_settings`` reads: the local data with the accepted remote document over it.

    A document whose new config did not confirm before its deadline is skipped for the
    last good one, so a config that crashes the daemon cannot keep it down.
    """
    path = remote_path(config_path)
    if not path.exists():
        return data
    record = read_record(Path(data.get("state_dir", "/var/lib/edge")))
    if record.get("pending") and time.time() > record.get("deadline", 0):
        path = good_path(config_path)
        if not path.exists():
            return data
    try:
        doc = open_document(path.read_bytes(), _config_keys(data), site=data.get("site"),
                            device=data.get("device_id"))
        changes = {k: v for k, v in doc.settings.items() if _allowed_key(k)}
        if (problem := plaintext_problem(data, changes)) is not None:  # the local file changed since
            log.error("remote_config_key_ignored", path=str(path), key="mqtt.brokers", error=problem)
            changes.pop("mqtt.brokers")
        return merge(data, changes)
    except (ConfigRefused, EdgeError, OSError) as exc:
        log.error("remote_config_ignored", path=str(path), error=str(exc)[:300])
        return data


def _config_keys(data: dict[str, Any]):
    """The anchors with the config role (revocations applied) from the raw config data."""
    from edge.trust import REVOCATIONS_FILE, TrustStore, load_anchors

    paths = (data.get("trust") or {}).get("central_keys") or []
    state_dir = Path(data.get("state_dir", "/var/lib/edge"))
    return TrustStore(load_anchors(paths), state_dir / REVOCATIONS_FILE).keys_for(DOCUMENT_TYPE)


def _allowed_key(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in REMOTE_KEYS)


def build_document(changes: dict[str, Any], *, site: str, version: int, keys, device: str | None = None,
                   ttl_s: float = 24 * 3600, issued_at: datetime | None = None) -> dict[str, Any]:
    """Central's side: a config document signed by each of ``keys`` (Ed25519 private keys)."""
    from edge.signing import sign

    issued = issued_at or datetime.now(UTC)
    doc: dict[str, Any] = {"type": DOCUMENT_TYPE, "site": site, "device": device, "version": version,
                           "issued_at": issued.isoformat(), "expires_at": (issued + timedelta(seconds=ttl_s)).isoformat(),
                           "settings": changes}
    for key in keys:
        doc = sign(doc, key)
    return doc


def main(argv: list[str] | None = None) -> None:
    """``python -m edge.update.remote_config --key K --site S --version N --set KEY=JSON …``"""
    import argparse

    from edge.signing import load_private_key

    p = argparse.ArgumentParser(prog="python -m edge.update.remote_config", description="Sign a config document.")
    p.add_argument("--key", action="append", required=True, help="PEM Ed25519 private key of the config role")
    p.add_argument("--site", required=True)
    p.add_argument("--device", help="one device (default: every device of the site)")
    p.add_argument("--version", type=int, required=True, help="above every version sent before")
    p.add_argument("--ttl-hours", type=float, default=24.0, help="the device refuses it after this")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="e.g. logging.level='\"debug\"'")
    args = p.parse_args(argv)
    changes = {}
    for item in args.set:
        key, _, value = item.partition("=")
        changes[key] = json.loads(value)
    doc = build_document(changes, site=args.site, device=args.device, version=args.version,
                         keys=[load_private_key(k) for k in args.key], ttl_s=args.ttl_hours * 3600)
    print(json.dumps(doc))


if __name__ == "__main__":
    main()


__all__ = ["DOCUMENT_TYPE", "REMOTE_KEYS", "ConfigDocument", "ConfigRefused", "overlay"]
