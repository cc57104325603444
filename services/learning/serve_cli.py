"""``edge content-serve FOLDER``: the reference content server for tests, the demo and small sites."""

from __future__ import annotations

import signal
import sys
import threading

import click

from edge.cli._common import edge_errors, json_option, output


@click.command("content-serve")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--broker", required=True, help="Broker URI, mqtt://host:port or mqtts://host:port.")
@click.option("--site", required=True, help="Site name; the catalog is published for it.")
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Central's Ed25519 private key (PEM) that signs the catalog.")
@click.option("--chunk-size", default=256 * 1024, show_default=True, type=click.IntRange(4096, 8 * 1024 * 1024),
              help="Bytes per chunk.")
@click.option("--version", "catalog_version", type=click.IntRange(1), default=None,
              help="Catalog version (default: time of the newest change in FOLDER).")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--cert-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False))
@json_option
@edge_errors
def content_serve(folder, broker, site, key_path, chunk_size, catalog_version, ca_file, cert_file,
                  key_file, as_json) -> None:
    """Publish FOLDER as a signed course catalog and answer tablets' chunk requests.

    One sub-folder per course; its files are the items. Runs until SIGTERM or Ctrl-C.
    """
    from edge import logs, signing
    from services.learning._link import StandaloneLink
    from services.learning.server import ContentServer

    logs.configure("info", "auto", stream=sys.stderr)  # stdout carries the result line
    key = signing.load_private_key(key_path)
    link = StandaloneLink(broker, ca_file=ca_file, cert_file=cert_file, key_file=key_file).start()
    server = ContentServer(link, folder, site, key, chunk_size=chunk_size).start()
    catalog = server.publish_catalog(catalog_version)
    items = sum(len(c["items"]) for c in catalog["courses"])
    output({"ok": True, "version": catalog["version"], "courses": len(catalog["courses"]), "items": items},
           as_json, lambda d: f"serving catalog v{d['version']}: {d['courses']} courses, {d['items']} items "
                              f"(Ctrl-C to stop)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    link.stop()
