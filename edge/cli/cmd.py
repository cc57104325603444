"""``edge cmd``: sign commands (central, tests) and send commands on the device (engineers)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from edge.cli._common import (
    EX_FAIL,
    EX_UNAVAILABLE,
    edge_errors,
    fail,
    json_option,
    output,
    settings_from,
)

_ARG_HELP = "Argument k=v (repeatable); v is parsed as JSON when it can be (3, true, {...}), else a string."


def parse_args(pairs: tuple[str, ...]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not k=v", param_hint="--arg")
        try:
            args[key] = json.loads(raw)
        except json.JSONDecodeError:
            args[key] = raw
    return args


@click.group()
def cmd() -> None:
    """Commands: sign them for central, or send one to this device's daemon."""


@cmd.command("sign")
@click.option("--key", "key_files", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help="Private key (NAME.key); repeat for a second signer (two-person rule).")
@click.option("--target", required=True, help="Driver name on the device, or 'edge'.")
@click.option("--name", required=True, help="Command name, e.g. ping, unlock.")
@click.option("--arg", "arg_pairs", multiple=True, help=_ARG_HELP)
@click.option("--ttl", "ttl_s", type=click.FloatRange(min=1), default=300, show_default=True,
              help="Seconds until the command expires.")
@click.option("--device", help="The device the command is for.")
@click.option("--site", help="The site (required for a site-wide command, i.e. without --device).")
@click.option("--reason", help="Why, for the audit trail.")
@click.option("--id", "command_id", help="Command id (default: a new UUID).")
@click.option("--publish", "publish_uri", help="Also publish it: mqtt://host:port or mqtts://host:port.")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), help="CA for --publish over mqtts.")
@click.option("--cert-file", type=click.Path(exists=True, dir_okay=False), help="Client certificate for --publish.")
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False), help="Client key for --publish.")
@json_option
@edge_errors
def sign(key_files, target, name, arg_pairs, ttl_s, device, site, reason, command_id, publish_uri,
         ca_file, cert_file, key_file, as_json) -> None:
    """Print a signed command (JSON); with --publish, send it to the device's cmd topic."""
    from edge.commands.build import build_command
    from edge.signing import load_private_key

    if not device and not site:
        fail("name the audience: --device D (one device) or --site S (every device of the site)",
             as_json=as_json)
    if publish_uri and not site:
        fail("--publish needs --site (topics are edge/v1/SITE/DEVICE/cmd or edge/v1/SITE/cmd)", as_json=as_json)
    doc = build_command(target=target, name=name, args=parse_args(arg_pairs), ttl_s=ttl_s, device=device,
                        site=site, reason=reason, command_id=command_id,
                        keys=[load_private_key(k) for k in key_files])
    _check_schema(doc, as_json)
    topic = None
    if publish_uri:
        from edge.commands.publish import publish_command

        topic = publish_command(publish_uri, site, device, doc, ca_file=ca_file, cert_file=cert_file,
                                key_file=key_file)
        click.echo(f"published to {topic} (QoS 1, acknowledged)", err=True)
    output(doc, as_json, lambda d: json.dumps(d, indent=2))


def _check_schema(doc: dict, as_json: bool) -> None:
    """Refuse to print a command that every device would reject as malformed."""
    from pydantic import ValidationError

    from edge.commands.model import Command

    try:
        Command.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        fail(f"devices would reject this command as malformed: {problems}", as_json=as_json)


@cmd.command("local")
@click.argument("target")
@click.argument("name")
@click.option("--arg", "arg_pairs", multiple=True, help=_ARG_HELP)
@click.option("--reason", help="Why, for the audit trail (recorded with your user name).")
@click.option("--timeout", type=float, default=65.0, show_default=True, help="Seconds to wait for the result.")
@json_option
@click.pass_context
@edge_errors
def local(ctx, target, name, arg_pairs, reason, timeout, as_json) -> None:
    """Run a command on this device through the daemon's control socket.

    Allowed to whoever may open state_dir/control.sock; recorded with your user
    name. Exit 0 ok, 1 failed or rejected, 69 daemon unreachable.
    """
    from edge.commands.local import ControlUnavailable, send

    settings = settings_from(ctx)
    try:
        result = send(settings.state_dir, target, name, parse_args(arg_pairs), reason, timeout=timeout)
    except ControlUnavailable as exc:
        fail(str(exc), EX_UNAVAILABLE, as_json=as_json)
    output(result, as_json, _result_text)
    sys.exit(0 if result.get("status") == "ok" else EX_FAIL)


def _result_text(r: dict) -> str:
    head = f"{r.get('target')} {r.get('name')}: {r.get('status')}"
    if r.get("reason"):
        head += f" ({r['reason']})"
    lines = [head]
    if r.get("detail"):
        lines.append(f"  {r['detail']}")
    if r.get("result"):
        lines.append("  " + json.dumps(r["result"], default=str))
    return "\n".join(lines)
