"""``edge keys gen``: make an Ed25519 signing key pair for central or for tests."""

from __future__ import annotations

import click

from edge.cli._common import edge_errors, fail, json_option, output


@click.group()
def keys() -> None:
    """Signing keys for commands, galleries and catalogs."""


@keys.command("gen")
@click.argument("name")
@click.option("--dir", "folder", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder to write NAME.key and NAME.pub into.")
@json_option
@edge_errors
def gen(name: str, folder: str, as_json: bool) -> None:
    """Write NAME.key (private, mode 0600) and NAME.pub; print the key id.

    Give NAME.pub to devices (trust.central_keys); keep NAME.key on the signing host only.
    """
    from edge.signing import generate_keypair

    if "/" in name or name.startswith("."):
        fail(f"key name {name!r} must be a plain file name (use --dir for the folder)", as_json=as_json)
    try:
        key_path, pub_path, kid = generate_keypair(folder, name)
    except FileExistsError:
        fail(f"{folder}/{name}.key already exists; refusing to overwrite a private key", as_json=as_json)
    except PermissionError as exc:
        fail(f"cannot write into {folder}: {exc.strerror}", as_json=as_json)
    data = {"key_id": kid, "private_key": str(key_path), "public_key": str(pub_path)}
    output(data, as_json, lambda d: f"key id {d['key_id']}\n  private {d['private_key']} (mode 0600, keep secret)"
                                    f"\n  public  {d['public_key']} (add to trust.central_keys)")
