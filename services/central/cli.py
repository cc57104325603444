"""``edge central …``: the reference central ingest and the tools that read its database."""

from __future__ import annotations

import re
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta

import click

from edge.cli._common import EX_UNAVAILABLE, EX_USAGE, fail, json_option, output, publish_options

_DB_HELP = ("Database: a SQLite file path (default kind, no server) or postgresql://user@host/db. "
            "Env: EDGE_CENTRAL_DB.")


def _db_option(fn):
    return click.option("--db", "db_url", envvar="EDGE_CENTRAL_DB", required=True, help=_DB_HELP)(fn)


def _open(db_url: str, as_json: bool):
    from services.central.db import DbError, open_db

    try:
        db = open_db(db_url)
        db.migrate()
        return db
    except ImportError as exc:
        fail(f"--db {db_url.split('@')[-1]}: PostgreSQL needs the central extra "
             f"(pip install 'edge[central]'): {exc}", EX_UNAVAILABLE, as_json=as_json)
    except DbError as exc:
        fail(f"--db: {exc}", EX_UNAVAILABLE, as_json=as_json)


@click.group()
def central() -> None:
    """Central side of the contract: ingest events into a database, read devices, gaps, events."""


@central.command("ingest")
@click.option("--broker", envvar="EDGE_CENTRAL_BROKER", required=True, help="mqtt://host:port or mqtts://…")
@_db_option
@click.option("--group", default="ingest", show_default=True, help="Shared-subscription group name.")
@click.option("--instance", type=click.IntRange(1, 10_000), default=1, show_default=True,
              help="This process's number in the group (its client id is edge-central-GROUP-N).")
@click.option("--client-id", help="MQTT client id (stable: the broker keeps its session across restarts).")
@click.option("--batch-max", type=click.IntRange(1, 100_000), default=500, show_default=True,
              help="Messages per database transaction at most.")
@click.option("--linger-ms", type=click.IntRange(0, 60_000), default=50, show_default=True,
              help="How long a small batch waits for more messages before it commits.")
@click.option("--receive-max", type=click.IntRange(1, 65535), default=2000, show_default=True,
              help="Unacknowledged messages the broker may send (MQTT 5 Receive Maximum).")
@click.option("--session-expiry-s", type=click.IntRange(0), default=7 * 24 * 3600, show_default=True)
@click.option("--no-share", is_flag=True,
              help="Subscribe without $share: for a single consumer on mosquitto 2.0, which does not "
                   "restore shared subscriptions after a broker restart (see docs/fleet.md).")
@click.option("--max-message-bytes", type=click.IntRange(1024, 268_435_455), default=8 * 1024 * 1024,
              show_default=True, help="A larger message is kept as a reject (its first 64 KiB), not parsed.")
@click.option("--metrics-listen", help="HOST:PORT for Prometheus /metrics (off when not given).")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--cert-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
def ingest(broker, db_url, group, instance, client_id, batch_max, linger_ms, receive_max, session_expiry_s,
           no_share, max_message_bytes, metrics_listen, ca_file, cert_file, key_file, log_level) -> None:
    """Run one ingest process until SIGTERM: MQTT -> database, acknowledged after commit."""
    from pathlib import Path

    from edge.logs import configure
    from edge.mqtt.errors import MqttConfigError
    from services.central.db import open_db
    from services.central.ingest import Ingest, IngestConfig

    configure(log_level, "auto", stream=sys.stderr)
    cfg = IngestConfig(broker=broker, group=group, client_id=client_id or f"edge-central-{group}-{instance}",
                       batch_max=batch_max, linger_s=linger_ms / 1000, receive_max=receive_max,
                       session_expiry_s=session_expiry_s, shared=not no_share,
                       max_message_bytes=max_message_bytes,
                       ca_file=Path(ca_file) if ca_file else None, cert_file=Path(cert_file) if cert_file else None,
                       key_file=Path(key_file) if key_file else None)
    db = _open(db_url, False)
    try:
        worker = Ingest(cfg, db)
    except MqttConfigError as exc:
        fail(f"--broker: {exc}", EX_USAGE)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    server = None
    if metrics_listen:
        from services.central.metrics import serve

        server = serve(metrics_listen, worker.status, lambda: open_db(db_url))
    stop.wait()
    worker.stop()
    if server is not None:
        server.shutdown()
    db.close()


@central.command("devices")
@_db_option
@json_option
def devices(db_url, as_json) -> None:
    """The device registry: online, version, store, last seen."""
    rows = _open(db_url, as_json).devices()
    output(rows, as_json, lambda rs: "\n".join(
        [f"{'DEVICE':24} {'SITE':16} {'ONLINE':7} {'VERSION':10} {'BOOT':>5}  LAST SEEN"] +
        [f"{d['device']:24} {d['site']:16} {_yes(d['online']):7} {d['version'] or '-':10} "
         f"{d['boot_seq'] if d['boot_seq'] is not None else '-':>5}  {d['last_seen'] or '-'}"
         for d in rs]) if rs else "no devices yet")


def _yes(value) -> str:
    return "-" if value is None else ("yes" if value else "NO")


@central.command("gaps")
@_db_option
@click.option("--device", help="Only this device.")
@json_option
def gaps(db_url, device, as_json) -> None:
    """Sequence gaps: seqs not (yet) received between the lowest and highest seen per device."""
    rows = _open(db_url, as_json).gaps(device)
    output(rows, as_json, lambda rs: "\n".join(
        f"{g['device']} store={g['store'] or '-'} missing seq {g['first_missing']}..{g['last_missing']} "
        f"({g['missing']})" for g in rs) if rs else "no gaps")


_RELATIVE = re.compile(r"^(\d+)([smhd])$")


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    if m := _RELATIVE.fullmatch(text):
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: int(m.group(1))})
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected ISO 8601 (2026-01-31T12:00:00Z) or an age like 2h, "
                                 "30m, 7d") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@central.command("events")
@_db_option
@click.option("--device", help="Only this device.")
@click.option("--since", help="ISO 8601 time, or an age: 30m, 2h, 7d.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@json_option
def events(db_url, device, since, limit, as_json) -> None:
    """Stored events, oldest first."""
    rows = _open(db_url, as_json).events(device, _since(since), limit)
    output(rows, as_json, lambda rs: "\n".join(
        f"{e['ts']} {e['device']} #{e['seq']} {e['type']} {e['priority']}" for e in rs) if rs else "no events")


# -- two people, two machines: a command waits here for its second signature ----------------

@central.command("propose")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@_db_option
@json_option
def propose(file, db_url, as_json) -> None:
    """Keep a command signed by a first person (FILE, from `edge cmd sign --out`) for a second.

    The second person sees it with `edge central proposals` and adds their signature with
    `edge central cosign ID --key THEIRS.key --publish …`, from their own machine.
    """
    import json as _json

    from edge.commands.cosign import CosignRefused, cosign_check
    from services.central.db import DbError

    try:
        doc = _json.loads(open(file, encoding="utf-8").read())
        cosign_check(doc, where=file)
        _open(db_url, as_json).propose(doc)
    except (ValueError, CosignRefused, DbError) as exc:
        fail(f"{exc}", as_json=as_json)
    output({"ok": True, "id": doc["id"], "signatures": len(doc["signatures"])}, as_json,
           f"proposed {doc['id']}: {_describe(doc)}; waiting for a second signature")


@central.command("proposals")
@_db_option
@json_option
def proposals(db_url, as_json) -> None:
    """Commands waiting for (or given) their second signature: what each would do, and who signed."""
    rows = _open(db_url, as_json).proposals()
    output(rows, as_json, lambda rs: "\n".join(
        f"{d['id']}  {d['_signatures']} signature(s)  {_describe(d)}  proposed {d['_proposed_at']}"
        for d in rs) if rs else "no proposals")


@central.command("cosign")
@click.argument("command_id")
@_db_option
@click.option("--key", "key_file_", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Your private key (NAME.key): a second person's, not the proposer's.")
@click.option("--signer-pub", "signer_pubs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="The first signer's public key: check their signature covers this content.")
@publish_options("Then publish it")
@json_option
def cosign(command_id, db_url, key_file_, signer_pubs, publish_uri, ca_file, cert_file, key_file, as_json) -> None:
    """Add your signature to proposal COMMAND_ID, store it, and (with --publish) send it."""
    from edge.cli.cmd import _publish_and_print
    from edge.commands.cosign import CosignRefused
    from edge.commands.cosign import cosign as add_signature

    db = _open(db_url, as_json)
    doc = db.proposal(command_id)
    if doc is None:
        fail(f"no proposal {command_id!r}; `edge central proposals` lists them", as_json=as_json)
    try:
        signed = add_signature(doc, key_file_, signer_pubs, where=f"proposal {command_id}")
    except CosignRefused as exc:
        fail(str(exc), as_json=as_json)
    db.cosigned(signed)
    click.echo(f"signed {_describe(signed)}; {len(signed['signatures'])} signatures", err=True)
    _publish_and_print(signed, signed.get("site"), signed.get("device"), publish_uri, ca_file, cert_file,
                       key_file, as_json)


def _describe(doc: dict) -> str:
    import json as _json

    return (f"{doc.get('target')} {doc.get('name')} {_json.dumps(doc.get('args', {}))} for "
            f"{doc.get('device') or doc.get('site')}, expires {doc.get('expires_at')}")
