"""Learning content download: verified, resumable chunk transfer vs a bare request/response loop.

Starts a real mosquitto on loopback and the reference content server over a
folder of random files. Ours: the tablet's downloader on the daemon's MQTT
link (``edge.mqtt.MqttLink``), verifying each chunk's sha256, writing it at
its offset, verifying the whole item and committing it (fsync, rename), with
no bandwidth cap and the same one-request-in-flight as the baseline. The bare
limit, in the same run: a plain paho MQTT 5 client sending the same chunk
requests (response topic + correlation data) one at a time and discarding the
answers, with the same socket options as the link. Higher download_mb_s is
better; ratio = ours / bare.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

CHUNK = 256 * 1024


def add_arguments(parser) -> None:
    parser.add_argument("--mb", type=int, default=64, help="Megabytes of content to move.")
    parser.add_argument("--items", type=int, default=4, help="Files the content is split into.")
    parser.add_argument("--chunk-size", type=int, default=CHUNK)


def _bare(uri_port: int, catalog: dict, site: str, nodelay: bool = False) -> float:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from services.learning import protocol

    got = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bare-bench", protocol=mqtt.MQTTv5)
    ready = threading.Event()
    client.on_connect = lambda c, *a: ready.set()
    client.on_message = lambda c, u, msg: got.set()
    client.connect("127.0.0.1", uri_port)
    client.loop_start()
    ready.wait(10)
    if nodelay:
        import socket
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reply = protocol.response_topic(site, "bare")
    client.subscribe(reply, 1)
    time.sleep(0.2)  # SUBACK before the first request
    started = time.perf_counter()
    for course in catalog["courses"]:
        for item in course["items"]:
            for index, chunk in enumerate(item["chunks"]):
                props = Properties(PacketTypes.PUBLISH)
                props.ResponseTopic, props.CorrelationData = reply, os.urandom(12)
                got.clear()
                client.publish(protocol.request_topic(site, "bare"),
                               protocol.ChunkRequest(item["sha256"], index, chunk).encode(), qos=1,
                               properties=props)
                if not got.wait(30):
                    raise RuntimeError("bare loop: no answer in 30 s")
    took = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return took


def _ours(tmp: Path, port: int, catalog: dict, site: str, concurrency: int) -> float:
    from edge.config import Settings
    from edge.mqtt import MqttLink
    from services.learning._cache import ContentCache
    from services.learning._catalog import Catalog
    from services.learning._transfer import Downloader

    settings = Settings(device_id=f"tab-bench-{concurrency}", site=site, role="tablet", state_dir=tmp / "st",
                        mqtt={"brokers": [f"mqtt://127.0.0.1:{port}"]})
    link = MqttLink(settings, None, device_state=False)
    link.start()
    if not link.wait_connected(10):
        raise RuntimeError("MqttLink did not connect")
    cat = Catalog.model_validate(catalog)
    cache = ContentCache(tmp / f"cache-{concurrency}", 1 << 40)
    dl = Downloader(link=link, site=site, device=settings.device_id, cache=cache, concurrency=concurrency,
                    rate_limit_bytes_s=0, chunk_timeout_s=30)
    dl.start()
    time.sleep(0.2)  # SUBACK of the response topic before the first request
    started = time.perf_counter()
    for course in cat.courses:
        for item in course.items:
            dl.enqueue(item, cat.chunk_size, course.id)
    idle = threading.Event()
    while not dl.idle():
        idle.wait(0.005)
    took = time.perf_counter() - started
    dl.stop()
    link.stop()
    if dl.counters["items_completed"] != len(cat.items()):
        raise RuntimeError(f"downloader finished {dl.counters} of {len(cat.items())} items")
    return took


def run(args) -> dict:
    import sys

    from edge import logs, signing
    from edge.testing.broker import Mosquitto
    from services.learning._link import StandaloneLink
    from services.learning.server import ContentServer

    logs.configure("warning", "json", stream=sys.stderr)  # stdout is the one JSON result
    site = "bench"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        per_item = args.mb * 1024 * 1024 // args.items
        (tmp / "content" / "course").mkdir(parents=True)
        for n in range(args.items):
            (tmp / "content" / "course" / f"item{n}.bin").write_bytes(os.urandom(per_item))
        key_path, _, _ = signing.generate_keypair(tmp / "keys", "central")
        broker = Mosquitto(tmp / "broker").start()
        try:
            link = StandaloneLink(broker.uri, client_id="bench-server").start()
            server = ContentServer(link, tmp / "content", site, signing.load_private_key(key_path),
                                   chunk_size=args.chunk_size).start()
            catalog = server.build_catalog(version=1)
            bare_s = _bare(broker.port, catalog, site)
            bare_nodelay_s = _bare(broker.port, catalog, site, nodelay=True)
            ours_s = _ours(tmp, broker.port, catalog, site, 1)
            ours2_s = _ours(tmp, broker.port, catalog, site, 2)
            server.stop()
            link.stop()
        finally:
            broker.stop()
    mb = per_item * args.items / 1e6
    # The limit is the bare loop with TCP_NODELAY, as the link's own socket has it; the
    # same loop with Nagle shows what a socket without it loses (~40 ms per round trip).
    return {"content_mb": round(mb, 1), "chunk_bytes": args.chunk_size,
            "download_mb_s": round(mb / ours_s, 1),
            "bare_request_response_mb_s": round(mb / bare_nodelay_s, 1),
            "ratio": round(bare_nodelay_s / ours_s, 3),
            "download_mb_s_2_items_parallel": round(mb / ours2_s, 1),
            "bare_request_response_nagle_mb_s": round(mb / bare_s, 1)}
