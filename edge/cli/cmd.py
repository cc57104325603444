"""``edge cmd``: sign commands (central, tests) and send commands on the device (engineers)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from edge.cli._common import (
    EX_FAIL,
    EX_UNAVAILABLE,
    EX_USAGE,
    Seconds,
    duration,
    edge_errors,
    fail,
    held_text,
    json_option,
    output,
    publish_options,
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


_MAX_TTL_S = 30 * 86400  # the largest commands.max_ttl_s a device may be configured with


@click.group()
def cmd() -> None:
    """Commands: sign them for central, or send one to this device's daemon."""


@cmd.command("sign")
@click.option("--key", "key_files", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help="Private key (NAME.key); a second person adds theirs with `edge cmd cosign`.")
@click.option("--target", required=True, help="Driver name on the device, or 'edge'.")
@click.option("--name", required=True, help="Command name, e.g. ping, unlock.")
@click.option("--arg", "arg_pairs", multiple=True, help=_ARG_HELP)
@click.option("--ttl", "ttl_s", type=Seconds(min=1, max=_MAX_TTL_S), default=300, show_default=True,
              help="Seconds until the command expires (at most 30 days: no device accepts longer, see "
                   "commands.max_ttl_s).")
@click.option("--device", help="The device the command is for.")
@click.option("--site", help="The site (required for a site-wide command, i.e. without --device).")
@click.option("--reason", help="Why, for the audit trail.")
@click.option("--id", "command_id", help="Command id (default: a new UUID).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False),
              help="Write the command to this file for a second signer (`edge cmd cosign FILE`).")
@publish_options("Also publish it")
@json_option
@edge_errors
def sign(key_files, target, name, arg_pairs, ttl_s, device, site, reason, command_id, out_file, publish_uri,
         ca_file, cert_file, key_file, as_json) -> None:
    """Print a signed command (JSON); with --out, write it for approval; with --publish, send it.

    Barrier and erase commands need two people: sign with --out, hand the file to
    the second person, who runs `edge cmd cosign FILE --key theirs.key --publish …`.
    """
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
    if out_file:
        _write(out_file, doc)
        click.echo(f"wrote {out_file}: a second person adds a signature with `edge cmd cosign {out_file} "
                   "--key THEIR.key`", err=True)
    _publish_and_print(doc, site, device, publish_uri, ca_file, cert_file, key_file, as_json)


def _write(path: str, doc: dict) -> None:
    from pathlib import Path

    Path(path).write_text(json.dumps(doc, indent=2) + "\n")


def _publish_and_print(doc, site, device, publish_uri, ca_file, cert_file, key_file, as_json) -> None:
    topic = None
    if publish_uri:
        from edge.commands.publish import publish_command

        topic = publish_command(publish_uri, site, device, doc, ca_file=ca_file, cert_file=cert_file,
                                key_file=key_file)
        click.echo(f"published to {topic} (QoS 1, acknowledged)", err=True)
    output(doc, as_json, lambda d: json.dumps(d, indent=2))


@cmd.command("cosign")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", "key_file_", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Your private key (NAME.key).")
@click.option("--signer-pub", "signer_pubs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="The first signer's public key: check their signature covers this content.")
@publish_options("Then publish it")
@json_option
@edge_errors
def cosign(file, key_file_, signer_pubs, publish_uri, ca_file, cert_file, key_file, as_json) -> None:
    """Add your signature to a command someone else signed (FILE, from `edge cmd sign --out`).

    Shows what you are signing on stderr; refuses when the existing signatures do not
    cover this content, or when your key already signed it. Rewrites FILE.
    """
    from edge.commands.cosign import cosign_file

    doc = cosign_file(file, key_file_, signer_pubs)
    click.echo(f"signed {doc['target']} {doc['name']} {json.dumps(doc['args'])} for "
               f"{doc.get('device') or doc.get('site')}, expires {doc['expires_at']}; "
               f"{len(doc['signatures'])} signatures", err=True)
    _publish_and_print(doc, doc.get("site"), doc.get("device"), publish_uri, ca_file, cert_file, key_file,
                       as_json)


@cmd.command("approve")
@click.argument("approval_id")
@click.option("--yes", is_flag=True, help="Approve without the question (you read the request first).")
@json_option
@click.pass_context
@edge_errors
def approve_cmd(ctx, approval_id, yes, as_json) -> None:
    """Approve, as the SECOND operator, a barrier/erase command another operator asked for.

    Run it under your own account (not the requester's). It shows the request (target,
    command, arguments, who asked, why) and asks before it runs; `--yes` skips the question
    (required with --json). The command then runs once, recorded with both names.
    """
    from edge.commands.local import ControlUnavailable, approve, pending

    if as_json and not yes:  # a script cannot answer the question: a usage error, before anything else
        fail(f"--json needs --yes: read the request first (edge cmd pending --json), then run "
             f"edge cmd approve {approval_id} --yes --json", EX_USAGE, as_json=True)
    settings = settings_from(ctx)
    try:
        waiting = {r["approval_id"]: r for r in pending(settings.state_dir)}
        request = waiting.get(approval_id)
        if request is not None and request.get("requested_by") == _me():  # the daemon would refuse it
            _refuse_approval(f"you ({_me()}) asked for {approval_id}: the approval must come from a second "
                             "operator logged in under their own account; nothing was run, and the request "
                             f"waits {_expires(request)}", approval_id, request, as_json)
        if request is not None and not yes:  # an unknown id: the daemon says so below
            click.echo(f"you approve: {_pending_line(request)}")
            try:
                sure = click.confirm("run it now, with your name as the second operator?", default=False)
            except click.Abort:  # no terminal to answer on
                sure = False
            if not sure:
                fail("not approved: nothing was run (the request waits until it expires; "
                     "--yes approves without the question)")
        result = approve(settings.state_dir, approval_id)
    except ControlUnavailable as exc:
        fail(str(exc), EX_UNAVAILABLE, as_json=as_json)
    if result.get("status") != "ok" and as_json:
        _refuse_approval(result.get("detail") or result.get("reason") or "not approved", approval_id,
                         {**(request or {}), **{k: result[k] for k in ("target", "name") if result.get(k)}},
                         as_json, result)
    output({"ok": result.get("status") == "ok", **result}, as_json, _result_text)
    sys.exit(0 if result.get("status") == "ok" else EX_FAIL)


def _me() -> str:
    """This account's name as the daemon sees it on the socket (SO_PEERCRED: the effective uid)."""
    import os
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid:{os.geteuid()}"


def _expires(request: dict) -> str:
    left = request.get("expires_in_s")
    return f"{duration(left)} more for another operator" if isinstance(left, int | float) else \
        "for another operator until it expires"


def _refuse_approval(message: str, approval_id: str, request: dict | None, as_json: bool,
                     result: dict | None = None) -> None:
    """A refused approval, shaped as every failure (``ok: false``, ``error``), naming the request."""
    known = {k: request[k] for k in ("target", "name", "requested_by") if (request or {}).get(k)}
    extra = {"reason": (result or {}).get("reason", "under_signed"), "result": result} if result else \
        {"reason": "under_signed"}
    fail(message, EX_FAIL, as_json=as_json, approval_id=approval_id, **known, **extra)


@cmd.command("pending")
@json_option
@click.pass_context
@edge_errors
def pending_cmd(ctx, as_json) -> None:
    """Barrier/erase requests waiting for a second operator's `edge cmd approve`."""
    from edge.commands.local import ControlUnavailable, pending

    settings = settings_from(ctx)
    try:
        items = pending(settings.state_dir)
    except ControlUnavailable as exc:
        fail(str(exc), EX_UNAVAILABLE, as_json=as_json)
    output(items, as_json, lambda rows: "\n".join(
        f"{r['approval_id']}  {_pending_line(r)}" for r in rows) or "nothing waiting")


def _pending_line(r: dict) -> str:
    left = (f", expires in {duration(r['expires_in_s'])}" if isinstance(r.get("expires_in_s"), int | float)
            else "")  # an older daemon does not say
    return (f"{r['target']} {r['name']} {json.dumps(r['args'])}  asked by {r['requested_by']} "
            f"{r['age_s']:.0f}s ago{left}: {r.get('reason') or 'no reason given'}")


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
@click.option("--single-person", is_flag=True,
              help="One passage (grant, passes = 1) without a second operator, where the site allows it; "
                   "raises an alarm.")
@click.option("--timeout", type=Seconds(max=3600), default=65.0, show_default=True,
              help="Seconds to wait for the result.")
@json_option
@click.pass_context
@edge_errors
def local(ctx, target, name, arg_pairs, reason, single_person, timeout, as_json) -> None:
    """Run a command on this device through the daemon's control socket.

    Allowed to whoever may open state_dir/control.sock; recorded with your user
    name. A barrier or erase command (open, grant, free passage, purge) waits for
    a second operator: it prints an approval id for `edge cmd approve`.
    Exit 0 ok, 1 failed or rejected, 69 daemon unreachable.
    """
    from edge.commands.local import ControlUnavailable, send

    settings = settings_from(ctx)
    try:
        result = send(settings.state_dir, target, name, parse_args(arg_pairs), reason,
                      single_person=single_person, timeout=timeout)
    except ControlUnavailable as exc:
        fail(str(exc), EX_UNAVAILABLE, as_json=as_json)
    output(result, as_json, lambda r: held_text(r) or _result_text(r))
    sys.exit(0 if result.get("status") == "ok" else EX_FAIL)


def _result_text(r: dict) -> str:
    # An approval id that matches no request comes back without target and name: name the id.
    what = f"{r['target']} {r['name']}" if r.get("target") and r.get("name") else r.get("id")
    head = f"{what}: {r.get('status')}"
    if r.get("reason"):
        head += f" ({r['reason']})"
    lines = [head]
    if r.get("detail"):
        lines.append(f"  {r['detail']}")
    if r.get("result"):
        lines.append("  " + json.dumps(r["result"], default=str))
    return "\n".join(lines)
