"""Build the AsyncAPI 3.0 document of the contract from ``edge.contract`` (models and channels).

The output is deterministic (sorted keys, stable ids) so that the committed
docs/asyncapi.json can be compared byte for byte with a fresh build.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic.json_schema import models_json_schema

from edge.contract import CHANNELS, CONTRACT_VERSION, EVENT_PAYLOADS, Channel

_REF = "#/components/schemas/{model}"
_MQTT_BINDING = "0.2.0"

DESCRIPTION = """\
How an `edge` device (prison gate or in-cell tablet) talks to central over MQTT 5.
Everything here is generated from the device's own pydantic models.

## Delivery semantics
- **At-least-once.** A device stores every event locally first and removes it from its
  outbox only when the broker PUBACKs the message that carried it. After a broker outage,
  a power cut or `kill -9` it sends again: duplicates happen, loss does not.
- **Deduplicate by event `id`** (a UUID, the idempotency key). Keep seen ids at least as
  long as a device may stay offline (weeks), or make writes idempotent on `id`.
- **Detect gaps by `seq`** (per device and store, strictly increasing, never reused,
  starting anywhere). Command results on `cmd/result` take seqs from the same sequence:
  detect gaps over events/# and cmd/result together. Each batch carries `store`, the id
  of the device's event store (state carries `store_id`): a replaced store starts seq
  again at 1 under a new id, so key by (device, store, seq). A gap that stays open means
  events were lost before reaching the broker: alert on it; do not wait for it forever.
- **Accept unknown event types** (and unknown payload fields): types are added without a
  new contract version. Schemas of known payloads are under `x-event-payloads` and, as
  standalone JSON Schema files, in docs/schemas/.
- **Order**: batches of one family arrive in seq order; families are independent.
- Events carry `clock` (synced | unsynced | stepped_back | unknown): how far the device
  trusted its wall clock for `ts`. Order by `seq`, not by `ts`.
- Payload limits: batches hold at most `mqtt.batch_max_events` events and
  `mqtt.batch_max_bytes` bytes (device config; defaults 500 and 256 KiB).

## Topics, QoS, retain
All topics start with `edge/v1/{site}/{device}/` (device topics) or `edge/v1/{site}/`
(site-wide). Everything is QoS 1; only `state` is retained. Devices connect with
`clean_start=false` and a session expiry (default 7 days) so commands published while a
device is offline are queued by the broker and delivered on its return.

## Scaling out ingestion: shared subscriptions
Several ingest servers share one stream with an MQTT 5 shared subscription: each message
goes to exactly one member of the group. Every server subscribes, QoS 1, with a
persistent session (clean_start=false, a session expiry) to

    $share/ingest/edge/v1/+/+/events/#          the whole estate
    $share/ingest/edge/v1/{site}/+/events/#     one site
    $share/ingest/edge/v1/+/+/cmd/result        command results

Subscribe to `edge/v1/+/+/state` OUTSIDE the group: a shared subscription receives no
retained messages. Add a server to the group to add capacity; a server that dies leaves its unacknowledged
messages to be redelivered (at-least-once: dedupe by `id`). Because members of a group may
process one device's batches in parallel, order by `seq` when writing, per device.
Keep the group name (`ingest`) the same on every server of one consumer application;
another application (analytics, alerting) uses its own group and gets its own copy.

Recommended topology: a broker cluster at the centre (EMQX, HiveMQ or VerneMQ, all of
which implement `$share`), and one mosquitto per site bridged to it. The site broker
keeps gates working as a local hub when the WAN is down and queues for the centre; its
bridge forwards every device-to-central channel of this document out and every
central-to-device channel in (QoS 1, one `topic` line each: never `edge/v1/{site}/#`
both ways), with `cleansession false` so nothing is lost across WAN outages
(config/mosquitto-site-bridge.conf, docs/fleet.md). Retained `state` messages are
bridged with their retain flag.

## Security
Devices authenticate with client certificates (mTLS; CN = device id). The broker ACL
(generated from this document: docs/broker-acl.md) lets a device publish only the
send channels under its own site and id (and its site's `gallery/request` and
`learning/req/{device}`), and read only its own receive channels and its site's
site-wide ones: it can write no inbound topic, its own included. Commands are
additionally signed with Ed25519 by central (docs/commands.md): a broker compromise
cannot command a gate.
"""


def _schemas() -> tuple[dict[str, Any], dict[str, str]]:
    """All payload schemas under components.schemas; returns (schemas, model name -> ref)."""
    models = [c.model for c in CHANNELS] + list(EVENT_PAYLOADS.values())
    unique = list(dict.fromkeys(models))
    refs, top = models_json_schema([(m, "validation") for m in unique], ref_template=_REF)
    schemas = dict(top.get("$defs", {}))
    names = {m.__name__: refs[(m, "validation")]["$ref"] for m in unique}
    return schemas, names


def _message(channel: Channel, ref: str) -> dict[str, Any]:
    return {
        "name": channel.model.__name__, "title": channel.model.__name__,
        "summary": (channel.model.__doc__ or "").strip().splitlines()[0],
        "contentType": "application/json", "payload": {"$ref": ref},
    }


def build() -> dict[str, Any]:
    """The AsyncAPI 3.0 document as a dict."""
    schemas, refs = _schemas()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for ch in CHANNELS:
        msg_id = ch.model.__name__
        messages[msg_id] = _message(ch, refs[msg_id])
        channels[ch.id] = {
            "address": ch.address, "title": ch.summary, "description": ch.description,
            "parameters": {name: {"description": text} for name, text in ch.parameters.items()},
            "messages": {msg_id: {"$ref": f"#/components/messages/{msg_id}"}},
        }
        operations[f"{ch.action}{ch.id[0].upper()}{ch.id[1:]}"] = {
            "action": ch.action, "channel": {"$ref": f"#/channels/{ch.id}"}, "summary": ch.summary,
            "messages": [{"$ref": f"#/channels/{ch.id}/messages/{msg_id}"}],
            "bindings": {"mqtt": {"qos": ch.qos, "retain": ch.retain, "bindingVersion": _MQTT_BINDING}},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "edge device MQTT contract", "version": CONTRACT_VERSION, "description": DESCRIPTION},
        "defaultContentType": "application/json",
        "servers": {"central": {
            "host": "broker.example:8883", "protocol": "secure-mqtt", "protocolVersion": "5.0",
            "description": "Central broker cluster (or a site broker bridged to it). mTLS: each "
                           "device presents a client certificate whose CN is its device id.",
            "bindings": {"mqtt": {"cleanSession": False, "sessionExpiryInterval": 604800, "keepAlive": 30,
                                  "lastWill": {"topic": "edge/v1/{site}/{device}/state", "qos": 1,
                                               "retain": True},
                                  "bindingVersion": _MQTT_BINDING}}}},
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "x-event-payloads": {t: {"$ref": refs[m.__name__]} for t, m in sorted(EVENT_PAYLOADS.items())},
        },
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


_DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _standalone(model, title: str, description: str | None = None) -> str:
    schema = model.model_json_schema(mode="validation")
    schema = {"$schema": _DRAFT, **schema, "title": title}
    if description:
        schema["description"] = description
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def schema_files() -> dict[str, str]:
    """Standalone JSON Schema (2020-12) files, relative path -> text: one per message of every
    channel (``messages/{channel id}.json``), the sent event envelope (``Event.json``) and one
    per known event payload (``events/{type}.json``). For validators that do not read AsyncAPI."""
    from edge.contract import SentEvent

    out = {"Event.json": _standalone(SentEvent, "Event", "One event as sent in a batch (events/# and "
                                     "cmd/result). Accept event types you do not know.")}
    for ch in CHANNELS:
        out[f"messages/{ch.id}.json"] = _standalone(ch.model, ch.model.__name__, f"{ch.address}: {ch.summary}")
    for type_, model in sorted(EVENT_PAYLOADS.items()):
        out[f"events/{type_}.json"] = _standalone(model, type_, f"Payload of a {type_} event.")
    return out
