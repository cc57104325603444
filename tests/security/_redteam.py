"""Central's side and the attacker's side, for the red-team tests: keys, signed commands, results."""

from __future__ import annotations

import textwrap
from pathlib import Path

from edge.commands.build import build_command
from edge.commands.publish import publish_command
from edge.signing import generate_keypair, load_private_key

SITE, DEVICE = "site-1", "dev-1"
RESULTS = f"edge/v1/{SITE}/{DEVICE}/cmd/result"
SYSTEM = f"edge/v1/{SITE}/{DEVICE}/events/system"


class Keys:
    """Central's signing keys: ops and security hold 'command'; courses holds only 'catalog'."""

    def __init__(self, folder: Path):
        self.private, self.pub, self.kid = {}, {}, {}
        for name, roles in (("ops", ["command"]), ("security", ["command"]), ("courses", ["catalog"]),
                            ("trustee", ["config"])):
            key, pub, kid = generate_keypair(folder, name, roles)
            self.private[name], self.pub[name], self.kid[name] = load_private_key(key), pub, kid

    def trusted(self, *names: str) -> list[str]:
        return [str(self.pub[n]) for n in names or ("ops", "security", "courses", "trustee")]

    def fingerprint(self, name: str) -> str:
        return fingerprint(self.private[name])

    def revocations(self, serial: int, *revoked: str, signer: str = "trustee") -> bytes:
        return revocation_list(serial, [self.private[n] for n in revoked], self.private[signer])

    def command(self, *signers: str, **kw) -> dict:
        kw.setdefault("device", DEVICE)
        kw.setdefault("site", SITE)
        kw.setdefault("ttl_s", 300)
        return build_command(keys=[self.private[s] for s in signers], **kw)


def fingerprint(private_key) -> str:
    """What a revocation list names: SHA-256 of the raw public key (as `edge keys` shows)."""
    import hashlib

    from edge.signing import _raw

    return hashlib.sha256(_raw(private_key.public_key())).hexdigest()


def revocation_list(serial: int, revoked: list, signer, site: str = SITE) -> bytes:
    """Central's signed revocation list of the ``revoked`` private keys' public halves."""
    import json
    from datetime import UTC, datetime

    from edge.signing import sign

    doc = {"type": "trust.revocations", "site": site, "serial": serial,
           "issued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "revoked": [{"fingerprint": fingerprint(k), "reason": "key stolen"} for k in revoked]}
    return json.dumps(sign(doc, signer)).encode()


def publish(broker, doc: dict, site: str = SITE, device: str = DEVICE) -> None:
    publish_command(broker.uri, site, device, doc)


def results(collector, command_id: str) -> list[dict]:
    out = [e["payload"] for m in collector.on_topic("/cmd/result") for e in m.json()["events"]]
    return [r for r in out if r["id"] == command_id]


def result_of(collector, broker, doc: dict, timeout: float = 20, *, site: str = SITE,
              device: str = DEVICE) -> dict:
    """Publish ``doc`` and wait for the result of this delivery (a replay has several)."""
    before = len(results(collector, doc["id"]))
    publish(broker, doc, site, device)
    return collector.wait_for(lambda c: len(got := results(c, doc["id"])) > before and got[-1], timeout,
                              f"the result of {doc['name']} {doc['id']}")


def alarms(collector, type_: str) -> list[dict]:
    return [e for m in collector.on_topic("/events/system") for e in m.json()["events"] if e["type"] == type_]


def plugin_driver(folder: Path) -> dict[str, str]:
    """A third-party driver, installed the ordinary way (an entry point), that declares a
    command under a new name as ``barrier``. Returns the env that makes it importable."""
    site = folder / "site"
    (site / "redteam_vault-1.0.dist-info").mkdir(parents=True)
    (site / "redteam_vault-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: redteam-vault\nVersion: 1.0\n")
    (site / "redteam_vault-1.0.dist-info" / "entry_points.txt").write_text(
        "[edge.drivers]\nvault.door = redteam_vault:VaultDoor\n")
    (site / "redteam_vault.py").write_text(textwrap.dedent('''
        from edge.driver import Driver

        class VaultDoor(Driver):
            command_effects = {"status": "observe", "swing_wide": "barrier"}

            def handle(self, name, args):
                return {"done": name}
    '''))
    return {"PYTHONPATH": str(site)}
