"""Publishing a signed command to a broker (``edge cmd sign --publish``), for tests and central teams."""

from __future__ import annotations

import ssl
import uuid
from typing import Any

from edge.errors import EdgeError
from edge.events import canonical_json

_TIMEOUT_S = 10.0


class PublishFailed(EdgeError):
    """The command could not be delivered to the broker."""


def publish_command(uri: str, site: str, device: str | None, doc: dict[str, Any], *,
                    ca_file: str | None = None, cert_file: str | None = None,
                    key_file: str | None = None) -> str:
    """Publish ``doc`` at QoS 1 and wait for the PUBACK; returns the topic."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge.mqtt import topics
    from edge.mqtt._client import parse_broker

    broker = parse_broker(uri, where="--publish")
    topic = topics.cmd(site, device) if device else topics.site_cmd(site)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-cmd-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    if broker.tls:
        ctx = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            ctx.load_cert_chain(cert_file, key_file)
        client.tls_set_context(ctx)
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except (OSError, ValueError) as exc:
        raise PublishFailed(f"cannot connect to {uri}: {exc}") from None
    client.loop_start()
    try:
        info = client.publish(topic, canonical_json(doc), qos=1)
        info.wait_for_publish(_TIMEOUT_S)
        if not info.is_published():
            raise PublishFailed(f"{uri} did not acknowledge the command within {_TIMEOUT_S:g}s")
    except (RuntimeError, ValueError) as exc:
        raise PublishFailed(f"publish to {uri} failed: {exc}") from None
    finally:
        client.disconnect()
        client.loop_stop()
    return topic


__all__ = ["PublishFailed", "publish_command"]
