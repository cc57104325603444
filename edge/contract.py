"""The MQTT contract between a device and central, as data: topics, QoS, retain, payload models.

``scripts/gen_asyncapi.py`` turns ``CHANNELS`` into docs/asyncapi.json
(AsyncAPI 3.0) and a test fails when the committed document drifts from the
models. The events, state and command topics are listed here; whatever has topics
or event types of its own (a service, a driver family, and the core's trust and
update parts too, which build on this module) registers them under the
``edge.channels`` and ``edge.event_payloads`` entry points, and they join
``CHANNELS`` and ``EVENT_PAYLOADS`` without this module importing them.

Directions are from the device's point of view, as AsyncAPI 3.0 describes one
application: ``send`` = the device publishes (central subscribes), ``receive``
= the device subscribes (central publishes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.commands.model import Command, CommandResult
from edge.events import MAX_SEQ, EventModel
from edge.schema import DEVICE, SHA256_HEX, SITE

CONTRACT_VERSION = "1.0.0"


_STORE = ("Id of the device's event store (set when the store was created). A replaced store starts "
          "seq at 1 again under a new id: key gaps and duplicates by (device, store, seq).")


class SentEvent(EventModel):
    """An event as it leaves the device: its store has assigned ``seq``, so it is always present."""

    seq: int = Field(  # type: ignore[assignment]
        ge=1, le=MAX_SEQ,
        description="Per device and store, strictly increasing, never reused; shared by events/# and "
                    "cmd/result, so a gap is only real across both.")


class ChainHead(BaseModel):
    """The device's audit chain at the batch's last event: record it, to anchor the chain off the device."""

    model_config = ConfigDict(extra="forbid")
    seq: int = Field(description="seq of the batch's last event.")
    hash: str = Field(pattern=SHA256_HEX, description=(
        "hex SHA-256 chain hash at that seq: hash(n) = sha256(hash(n-1) || the event's bytes exactly as "
        "sent), hash before the first event = 32 zero bytes. Keep (seq, hash) pairs; `edge audit verify "
        "--heads FILE` on the device proves its chain was not rewritten, even by someone with its key."))


class EventBatch(BaseModel):
    """``edge/v1/{site}/{device}/events/{family}``: one or more events of one family, in seq order."""

    model_config = ConfigDict(extra="forbid")
    store: str | None = Field(default=None, description=_STORE)
    events: list[SentEvent] = Field(min_length=1)
    chain: ChainHead | None = None


class CommandResultEvent(SentEvent):
    """A ``command.result`` event: the event envelope with a CommandResult payload."""

    type: Literal["command.result"] = "command.result"  # type: ignore[assignment]
    payload: CommandResult  # type: ignore[assignment]


class CommandResultBatch(BaseModel):
    """``edge/v1/{site}/{device}/cmd/result``: a batch of command.result events, in seq order."""

    model_config = ConfigDict(extra="forbid")
    store: str | None = Field(default=None, description=_STORE)
    events: list[CommandResultEvent] = Field(min_length=1)
    chain: ChainHead | None = None


class CommandRejectedPayload(BaseModel):
    """Payload of a ``system.command_rejected`` alarm event (on events/system)."""

    model_config = ConfigDict(extra="forbid")
    id: str | None
    name: str | None
    target: str | None
    reason: str = Field(description="One of the CommandResult reasons.")
    detail: str
    origin: Literal["mqtt", "local"]
    topic: str | None
    operator: str | None
    suppressed_before: int = Field(ge=0, description="Rejections not recorded (flood limit) since the last one.")


class DriverFaultPayload(BaseModel):
    """Payload of ``system.driver_fault`` (normal): a driver raised and is restarted with back-off."""

    model_config = ConfigDict(extra="forbid")
    driver: str
    kind: str
    error_type: str
    error: str = Field(max_length=300)
    restarts: int = Field(ge=0)


class EventsDroppedPayload(BaseModel):
    """Payload of ``system.events_dropped`` (alarm): the full store evicted pending events (never alarms)."""

    model_config = ConfigDict(extra="forbid")
    reason: Literal["store_full"]
    count: int = Field(ge=0, description="Dropped since the previous report.")
    by_priority: dict[Literal["normal", "telemetry"], int]
    seq_from: int | None = Field(description="Lowest dropped seq in this report: these seqs are gaps forever.")
    seq_to: int | None
    seqs: list[tuple[int, int]] = Field(
        default_factory=list,
        description="Exactly the seqs dropped before they left the device, as [lo, hi] ranges "
                    "(seq_from..seq_to may also span seqs that were delivered).")
    dropped_total: dict[Literal["normal", "telemetry"], int]


class StoreFullPayload(BaseModel):
    """Payload of ``system.store_full`` (alarm): once per episode of a full store."""

    model_config = ConfigDict(extra="forbid")
    max_bytes: int
    cap_bytes: int | None = Field(default=None, description="The cap in force: max_bytes, or less when the disk is short.")
    used_bytes: int
    refused_priority: Literal["alarm", "normal", "telemetry"] | None
    alarms_past_cap: bool


class StoreRecoveredPayload(BaseModel):
    """Payload of ``system.store_recovered`` (alarm): a corrupt store file was moved aside."""

    model_config = ConfigDict(extra="allow")
    problem: str
    seq_resumes_at: int | None = None
    moved_to: list[str] = Field(default_factory=list)
    salvaged_rows: int | None = Field(default=None, description="Rows of the damaged file copied back.")
    salvaged_pending: int | None = Field(default=None, description="Of those, not yet delivered: sent again.")
    salvaged_pending_seqs: list[tuple[int, int]] | None = Field(default=None, description="Their seqs, [lo, hi] ranges.")
    lost_seqs: list[tuple[int, int]] | None = Field(
        default=None, description="Seqs on damaged pages, [lo, hi] ranges: gaps forever (some may have been delivered).")
    salvage: str | None = Field(default=None, description="Set when nothing could be read from the damaged file.")


class StorePressurePayload(BaseModel):
    """Payload of ``system.store_pressure`` (alarm): what a short disk cost, by priority; at the
    start of an episode, every 10 s while it lasts, and at its end."""

    model_config = ConfigDict(extra="forbid")
    state: Literal["ongoing", "ended"]
    since: str = Field(description="When the episode started (UTC, ISO 8601).")
    reason: Literal["disk", "max_bytes"] = Field(description="disk: the file system's free space set the cap.")
    refused: dict[Literal["alarm", "normal", "telemetry"], int] = Field(description="Appends refused (StoreFull).")
    failed_commits: dict[Literal["alarm", "normal", "telemetry"], int] = Field(
        description="Events whose commit failed for want of space (alarms among them are kept and written later).")
    dropped: dict[Literal["alarm", "normal", "telemetry"], int] = Field(description="Pending events dropped to make room.")
    alarms_kept_in_memory: int = Field(ge=0)
    alarms_lost: int = Field(ge=0, description="Alarms beyond the in-memory bound: lost.")
    cap_bytes: int
    max_bytes: int
    used_bytes: int
    free_bytes: int = Field(description="Free bytes of the file system at the last look.")


class DriverHealth(BaseModel):
    """Health of one driver in a birth: ``status`` always, plus what the supervisor and the driver report."""

    model_config = ConfigDict(extra="allow")
    status: str = Field(description="ok | degraded | stopped | starting (a driver may report its own).")
    kind: str | None = Field(default=None, description="The driver kind, e.g. turnstile.serial.")
    restarts: int | None = Field(default=None, ge=0, description="Restarts after crashes since start.")
    last_error: str | None = None


class OutboxSummary(BaseModel):
    """What a birth says of the device's outbox (``error`` instead when the store cannot answer)."""

    model_config = ConfigDict(extra="forbid")
    pending: int | None = Field(default=None, ge=0, description="Events not yet acknowledged by the broker.")
    oldest_pending_age_s: float | None = None
    error: str | None = None


class ComponentFaultPayload(BaseModel):
    """Payload of a ``system.component_fault`` alarm: a daemon component's thread stopped on an error."""

    model_config = ConfigDict(extra="forbid")
    component: str = Field(description="Thread name: xray-ledger, commands, learning, messaging, gate, ...")
    error_type: str
    error: str
    faults: int = Field(ge=1, description="Faults of this component since the daemon started.")
    detail: str


class DeviceStateMessage(BaseModel):
    """``edge/v1/{site}/{device}/state`` (retained): birth (online) or death (offline) of the device."""

    model_config = ConfigDict(extra="forbid")
    online: bool
    device: str
    site: str
    role: Literal["gate", "tablet"]
    version: str = Field(description="edge software version.")
    boot_seq: int = Field(ge=1, description="Counts daemon starts; a death carries its birth's boot_seq.")
    started_at: datetime
    ts: datetime | None = Field(default=None, description="Birth only: when it was published.")
    drivers: dict[str, DriverHealth] | None = Field(default=None, description="Birth only: health per driver.")
    outbox: OutboxSummary | None = Field(default=None, description="Birth only: pending events, oldest age.")
    seal_key: str | None = Field(
        default=None, description="Birth only: the device's X25519 public key (base64, 32 bytes). Central "
                                  "seals what it sends this device (messages, gallery templates) to it; see "
                                  "edge/sealing.py for the envelope.")
    reason: Literal["shutdown", "connection_lost"] | None = Field(
        default=None, description="Death only: graceful shutdown, or the broker's last will.")
    store_id: str | None = Field(default=None, description=_STORE)


@dataclass(frozen=True)
class Channel:
    """One topic of the contract."""

    id: str
    address: str                          # with {site}, {device}, {family} parameters
    action: Literal["send", "receive"]    # from the device's point of view
    model: type[BaseModel]
    summary: str
    description: str
    qos: int = 1
    retain: bool = False
    parameters: dict[str, str] = field(default_factory=dict)


CHANNELS: list[Channel] = [
    Channel(
        "deviceEvents", "edge/v1/{site}/{device}/events/{family}", "send", EventBatch,
        "Events of one family, batched, in seq order.",
        "Every event is stored on the device first and leaves its outbox only when the broker "
        "has PUBACKed the message that carried it: delivery is at-least-once. Deduplicate by "
        "event `id`; detect gaps by `seq` (per device, strictly increasing, never reused). "
        "Within a family, batches arrive in seq order; across families no order is promised. "
        "Command results (cmd/result) take their seqs from the same per-device sequence: a consumer "
        "of events/# alone sees gaps that are not real, so detect gaps over both topics. Consumers "
        "MUST accept event types (and payload fields) they do not know: new ones are added without "
        "a new contract version. Scale out with a shared subscription: "
        "`$share/ingest/edge/v1/+/+/events/#` (see docs/fleet.md).",
        parameters={"site": SITE, "device": DEVICE,
                    "family": "Event family: the part of `type` before the first dot (turnstile, "
                              "biometric, xray, learning, message, system, ...)."}),
    Channel(
        "deviceState", "edge/v1/{site}/{device}/state", "send", DeviceStateMessage,
        "Retained birth/death of the device.",
        "Published retained on every connect (online), again when driver health changes "
        "(rate-limited) and on the `rebirth` command. The broker publishes the last will "
        "(online=false, reason=connection_lost) when the device vanishes; a graceful stop "
        "publishes online=false, reason=shutdown. Match a death to its birth by `boot_seq`. "
        "Subscribe to state WITHOUT `$share`: a shared subscription receives no retained messages, "
        "so a group member would never see the births published before it subscribed.",
        retain=True, parameters={"site": SITE, "device": DEVICE}),
    Channel(
        "deviceCommands", "edge/v1/{site}/{device}/cmd", "receive", Command,
        "Signed commands for one device.",
        "Ed25519-signed (see docs/commands.md). The device keeps a persistent session, so "
        "commands published while it is offline are delivered when it returns and run if still "
        "valid. Each id runs at most once. Publish with QoS 1, not retained.",
        parameters={"site": SITE, "device": DEVICE}),
    Channel(
        "siteCommands", "edge/v1/{site}/cmd", "receive", Command,
        "Signed commands for every device of a site.",
        "As deviceCommands. Devices that do not have the target driver, or that the command's "
        "`device` field does not name, ignore it silently.",
        parameters={"site": SITE}),
    Channel(
        "commandResults", "edge/v1/{site}/{device}/cmd/result", "send", CommandResultBatch,
        "What became of each command: ok, failed or rejected (with a reason).",
        "Results are events (family `command`), stored first like every event, so a result "
        "produced while offline arrives later; at-least-once, dedupe by event `id`, correlate "
        "by `payload.id` (the command id). Every rejection is also a `system.command_rejected` "
        "alarm event on events/system.",
        parameters={"site": SITE, "device": DEVICE}),
]

#: Schemas of event payloads by event type, published in the document for central teams.
EVENT_PAYLOADS: dict[str, type[BaseModel]] = {
    "command.result": CommandResult,
    "system.command_rejected": CommandRejectedPayload,
    "system.driver_fault": DriverFaultPayload,
    "system.events_dropped": EventsDroppedPayload,
    "system.store_full": StoreFullPayload,
    "system.store_recovered": StoreRecoveredPayload,
    "system.store_pressure": StorePressurePayload,
    "system.component_fault": ComponentFaultPayload,
}


def _registered_payloads() -> dict[str, type[BaseModel]]:
    """Payload models a service or driver family registers under the ``edge.event_payloads`` entry
    point (``"name" = "package.contract:EVENT_PAYLOADS"``): documented without the core importing it."""
    from edge.registry import registered

    found: dict[str, type[BaseModel]] = {}
    for ep in registered("edge.event_payloads"):
        found.update(ep.load())
    return found


EVENT_PAYLOADS.update(_registered_payloads())


def _registered_channels() -> list[Channel]:
    """Channels a service or driver family registers under the ``edge.channels`` entry point."""
    from edge.registry import registered

    return [channel for ep in registered("edge.channels")
            for channel in ep.load()()]


CHANNELS.extend(_registered_channels())
