"""Central's side: build and sign the TUF repository that devices update from.

Run by central, not by devices (``python -m edge.update.repo --help``). The layout:

- ``DIR/keys/ROLE.key``: one Ed25519 key per role (root, targets, snapshot, timestamp,
  and one per rollout delegation such as ``gate.canary``). Keep root and targets offline.
- ``DIR/metadata/``: what devices fetch (``N.root.json``, ``timestamp.json``,
  ``snapshot.json``, ``targets.json``, ``gate.canary.json`` …).
- ``DIR/targets/CLASS/GROUP/edge-wheelhouse.tar.gz``: the release a rollout group gets.

The top-level ``targets`` role signs no release itself: it delegates ``CLASS/GROUP/*`` to
one role per device class and rollout group (groups: ``canary``, ``site-NAME``, ``all``),
so the key that promotes a release to the canaries cannot ship it to everyone.
"""

from __future__ import annotations

import argparse
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

ARCHIVE = "edge-wheelhouse.tar.gz"
TOP = ("root", "targets", "snapshot", "timestamp")
EXPIRY_DAYS = {"root": 365, "targets": 90, "snapshot": 7, "timestamp": 1, "delegated": 30}


def target_path(device_class: str, group: str) -> str:
    """Where a rollout group's release lives in the repository (and the device looks)."""
    return f"{device_class}/{group}/{ARCHIVE}"


def _expires(days: float) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)


class ReleaseRepo:
    """A TUF repository in a folder: keys, metadata and targets."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.keys_dir = self.folder / "keys"
        self.meta_dir = self.folder / "metadata"
        self.targets_dir = self.folder / "targets"

    # -- keys ------------------------------------------------------------------------

    def signer(self, role: str):
        from cryptography.hazmat.primitives import serialization
        from securesystemslib.signer import CryptoSigner

        key = serialization.load_pem_private_key((self.keys_dir / f"{role}.key").read_bytes(), None)
        return CryptoSigner(key)

    def new_key(self, role: str):
        """Make (or replace) the key of ``role``; returns its public TUF key."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from securesystemslib.signer import SSlibKey

        private = Ed25519PrivateKey.generate()
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        path = self.keys_dir / f"{role}.key"
        path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        path.chmod(0o600)
        return SSlibKey.from_crypto(private.public_key())

    # -- metadata files -----------------------------------------------------------------

    def load(self, role: str) -> Metadata:
        if role == "root":
            return Metadata.from_file(str(self.meta_dir / f"{self.root_version()}.root.json"))
        return Metadata.from_file(str(self.meta_dir / f"{role}.json"))

    def root_version(self) -> int:
        return max(int(p.name.split(".")[0]) for p in self.meta_dir.glob("*.root.json"))

    def write(self, role: str, md: Metadata, *, signer_role: str | None = None, bump: bool = True,
              expires_days: float | None = None) -> Metadata:
        """Bump the version, set the expiry, sign with the role's key and write the file."""
        if bump:
            md.signed.version += 1
        kind = role if role in TOP else "delegated"
        md.signed.expires = _expires(EXPIRY_DAYS[kind] if expires_days is None else expires_days)
        md.signatures.clear()
        md.sign(self.signer(signer_role or role))
        name = f"{md.signed.version}.root.json" if role == "root" else f"{role}.json"
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        md.to_file(str(self.meta_dir / name), JSONSerializer(compact=False))
        return md

    # -- operations ---------------------------------------------------------------------

    def init(self, delegations: list[str]) -> None:
        """A new repository: top-level roles and one delegation per CLASS.GROUP name."""
        root = Root(expires=_expires(EXPIRY_DAYS["root"]), consistent_snapshot=False)
        for role in TOP:
            root.add_key(self.new_key(role), role)
        targets = Targets(expires=_expires(EXPIRY_DAYS["targets"]))
        targets.delegations = Delegations(keys={}, roles={})
        self.write("root", Metadata(root), bump=False)
        for name in delegations:
            self._delegate(targets, name)
            self.write(name, Metadata(Targets(expires=_expires(EXPIRY_DAYS["delegated"]))), bump=False)
        self.write("targets", Metadata(targets), bump=False)
        self.snapshot()

    def _delegate(self, targets: Targets, name: str) -> None:
        device_class, group = name.split(".", 1)
        key = self.new_key(name)
        targets.delegations.keys[key.keyid] = key
        targets.delegations.roles[name] = DelegatedRole(name, [key.keyid], 1, True,
                                                        paths=[f"{device_class}/{group}/*"])

    def add_delegation(self, name: str) -> None:
        targets = self.load("targets")
        self._delegate(targets.signed, name)
        self.write(name, Metadata(Targets(expires=_expires(EXPIRY_DAYS["delegated"]))), bump=False)
        self.write("targets", targets)
        self.snapshot()

    def rotate_key(self, role: str) -> None:
        """Replace a top-level role's key through a new root, signed by the old and new root keys."""
        root = self.load("root")
        old_root = self.signer("root") if role == "root" else None
        for keyid in list(root.signed.roles[role].keyids):
            root.signed.revoke_key(keyid, role)
        root.signed.add_key(self.new_key(role), role)
        root.signed.version += 1
        root.signed.expires = _expires(EXPIRY_DAYS["root"])
        root.signatures.clear()
        if old_root is not None:  # devices trust the new root only if the old one signs it too
            root.sign(old_root, append=True)
        root.sign(self.signer("root"), append=True)
        root.to_file(str(self.meta_dir / f"{root.signed.version}.root.json"), JSONSerializer(compact=False))
        if role in ("targets",):
            self.write("targets", self.load("targets"))
        self.snapshot()

    def publish(self, device_class: str, group: str, archive: str | Path, version: str) -> str:
        """Offer ``archive`` as ``version`` to one rollout group; returns the target path."""
        path = target_path(device_class, group)
        dest = self.targets_dir / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, dest)
        info = TargetFile.from_file(path, str(dest))
        info.unrecognized_fields["custom"] = {"version": version}
        role = f"{device_class}.{group}"
        md = self.load(role)
        md.signed.targets[path] = info
        self.write(role, md)
        self.snapshot()
        return path

    def snapshot(self, timestamp_days: float | None = None) -> None:
        """Sign a snapshot of every targets file, then a timestamp of the snapshot."""
        snap = self.load("snapshot") if (self.meta_dir / "snapshot.json").exists() else None
        meta = {}
        for file in sorted(self.meta_dir.glob("*.json")):
            role = file.name.removesuffix(".json")
            if role in ("timestamp", "snapshot") or role.endswith(".root"):
                continue
            meta[file.name] = MetaFile(Metadata.from_file(str(file)).signed.version)
        if snap is None:
            snap = Metadata(Snapshot(expires=_expires(EXPIRY_DAYS["snapshot"]), meta=meta))
            self.write("snapshot", snap, bump=False)
        else:
            snap.signed.meta = meta
            self.write("snapshot", snap)
        self.timestamp(timestamp_days)

    def timestamp(self, days: float | None = None) -> None:
        """Re-sign the timestamp (run it more often than it expires: it is the freeze alarm)."""
        version = self.load("snapshot").signed.version
        if (self.meta_dir / "timestamp.json").exists():
            ts = self.load("timestamp")
            ts.signed.snapshot_meta = MetaFile(version)
            self.write("timestamp", ts, expires_days=days)
        else:
            ts = Metadata(Timestamp(expires=_expires(EXPIRY_DAYS["timestamp"]), snapshot_meta=MetaFile(version)))
            self.write("timestamp", ts, bump=False, expires_days=days)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m edge.update.repo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("init", help="new repository with keys and rollout delegations")
    p.add_argument("folder")
    p.add_argument("--delegation", action="append", default=[],
                   help="CLASS.GROUP, e.g. gate.canary, gate.site-hmp-north, gate.all (repeat)")
    p = sub.add_parser("delegate", help="add one rollout delegation CLASS.GROUP")
    p.add_argument("folder")
    p.add_argument("name")
    p = sub.add_parser("publish", help="offer a wheelhouse archive to one rollout group")
    p.add_argument("folder")
    p.add_argument("--class", dest="device_class", required=True, choices=["gate", "tablet"])
    p.add_argument("--group", required=True, help="canary, site-NAME or all")
    p.add_argument("--version", required=True)
    p.add_argument("archive")
    p = sub.add_parser("rotate", help="new key for a top-level role, announced by a new root")
    p.add_argument("folder")
    p.add_argument("role", choices=list(TOP))
    p = sub.add_parser("timestamp", help="re-sign the timestamp (cron it: it expires after a day)")
    p.add_argument("folder")
    args = parser.parse_args(argv)
    repo = ReleaseRepo(args.folder)
    if args.cmd == "init":
        repo.init(args.delegation)
    elif args.cmd == "delegate":
        repo.add_delegation(args.name)
    elif args.cmd == "rotate":
        repo.rotate_key(args.role)
    elif args.cmd == "publish":
        print(repo.publish(args.device_class, args.group, args.archive, args.version))
    else:
        repo.timestamp()


if __name__ == "__main__":
    main()
