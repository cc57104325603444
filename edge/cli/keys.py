"""``edge keys``: the keys this device trusts (roles, fingerprints, expiry); ``gen`` makes a key pair."""

from __future__ import annotations

import os
import sys

import click

from edge.cli._common import (
    EX_CONFIG,
    EX_USAGE,
    edge_errors,
    fail,
    json_option,
    output,
    settings_from,
)


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def keys(ctx: click.Context, as_json: bool) -> None:
    """Trusted keys of this device: roles, fingerprints, expiry (exit 78 when one is refused).

    Sub-commands: list (the same as no sub-command), gen (make a signing key pair).
    """
    if ctx.invoked_subcommand is None:
        _list(ctx, as_json)


@keys.command("list")
@json_option
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """The trusted keys (the same as `edge keys`): roles, fingerprints, expiry, revocation."""
    _list(ctx, as_json or ctx.parent.params.get("as_json", False))


def _list(ctx: click.Context, as_json: bool) -> None:
    from edge.trust import TrustAnchorError, trust_store

    settings = settings_from(ctx)
    try:
        store = trust_store(settings)
    except TrustAnchorError as exc:
        fail("; ".join(exc.lines), EX_CONFIG, as_json=as_json)
    revoked = store.revoked()
    rows = [a.as_dict() | {"revoked": a.fingerprint in revoked} for a in store.anchors.values()]
    data = {"keys": rows, "revocation_serial": store.serial}

    def text(d) -> str:
        if not d["keys"]:
            return "no trusted keys ([trust].central_keys is empty): remote commands are refused"
        return "\n".join(f"{r['key_id']}  {','.join(r['roles']):<24} expires {r['expires'] or 'never':<26}"
                         f"{' REVOKED' if r['revoked'] else ''}  {r['path']}\n  sha256 {r['fingerprint']}"
                         for r in d["keys"])
    output(data, as_json, text)
    sys.exit(0)


@keys.command("gen")
@click.argument("name")
@click.option("--dir", "folder", default=".", show_default=True, type=click.Path(),
              help="Existing folder to write NAME.key, NAME.pub and NAME.pub.json into (never created).")
@click.option("--role", "roles", multiple=True, required=True,
              type=click.Choice(["command", "catalog", "gallery", "directory", "config", "update"]),
              help="What the key may sign (repeatable). Give a command key no other role.")
@json_option
@edge_errors
def gen(name: str, folder: str, roles: tuple[str, ...], as_json: bool) -> None:
    """Write NAME.key (private, mode 0600), NAME.pub and its roles file NAME.pub.json (0640).

    Give NAME.pub and NAME.pub.json to devices (trust.central_keys); keep NAME.key
    on the signing host only.
    """
    from edge.signing import generate_keypair

    if "/" in name or name.startswith("."):
        fail(f"key name {name!r} must be a plain file name (use --dir for the folder)", as_json=as_json)
    _check_folder(folder, as_json)
    try:
        key_path, pub_path, kid = generate_keypair(folder, name, roles)
    except FileExistsError:
        fail(f"{folder}/{name}.key already exists; refusing to overwrite a private key", as_json=as_json)
    except PermissionError as exc:
        fail(f"cannot write into {folder}: {exc.strerror}", as_json=as_json)
    data = {"key_id": kid, "private_key": str(key_path), "public_key": str(pub_path), "roles": sorted(roles)}
    output(data, as_json, lambda d: f"key id {d['key_id']} roles {','.join(d['roles'])}"
                                    f"\n  private {d['private_key']} (mode 0600, keep secret)"
                                    f"\n  public  {d['public_key']} and its .json (add to trust.central_keys)")


def _check_folder(folder: str, as_json: bool) -> None:
    """Exit 2 unless --dir is an existing folder: a typo must not put a private key in a new
    folder nobody looks after, with whatever owner and mode the umask gives it."""
    if os.path.isdir(folder):
        return
    what = "is not a folder" if os.path.lexists(folder) else "does not exist"
    fail(f"--dir {folder}: {what}; edge keys gen never creates the folder for a private key. Check the "
         f"path, or create it first, owned by the signing user and closed to others "
         f"(install -d -m 0700 {folder}), then run this again", EX_USAGE, as_json=as_json, dir=folder)
