"""A batch message: stored event bytes of one family joined in one envelope.

``{"store": ..., "events": [<stored bytes>, ...], "chain": {"seq": ..., "hash": ...}}``:
the events are the canonical bytes the store holds, joined, never re-serialised.
"""

from __future__ import annotations

from edge.mqtt import topics
from edge.seqranges import runs

_HEAD, _SEP = b'{"events":[', b","
# Each batch ends with the audit chain's head at its last event: central records the heads it
# received, and `edge audit verify --heads` later proves the local chain was not rewritten.
_CHAIN = b'],"chain":{"seq":%d,"hash":"%s"}}'
RESULT_FAMILY = "command"  # command.result events go to cmd/result, not events/command


class Batch:
    """One message: events of one family, in seq order. ``ranges``: the (first, last) seq
    runs its PUBACK acknowledges (every pending event in them is in the message)."""

    __slots__ = ("topic", "payload", "ranges", "count")

    def __init__(self, topic: str, payload: bytes, ranges: list[tuple[int, int]], count: int):
        self.topic, self.payload, self.ranges, self.count = topic, payload, ranges, count

    @property
    def first(self) -> int:
        return self.ranges[0][0]

    @property
    def seqs(self) -> list[int]:
        return [seq for lo, hi in self.ranges for seq in range(lo, hi + 1)]


def pack(rows, *, site: str, device: str, max_events: int, max_bytes: int,
         store_id: str | None = None) -> list[Batch]:
    """Group (seq, type, body, chain hash) rows in seq order into per-family batches, each in seq order.

    A family's batch closes when it reaches ``max_events`` or would pass
    ``max_bytes`` (a single event larger than that still goes, alone). ``store_id``
    goes in each envelope (``{"store": ..., "events": [...]}``).
    """
    head = envelope_head(store_id)
    envelope = len(head) + len(_CHAIN) + 20 + 64
    open_: dict[str, list] = {}  # family -> [bodies, seqs, size, chain hash of the last]
    closed: list[tuple[int, str, list]] = []
    last_type = family = cur = None
    for seq, type_, body, digest in rows:
        if type_ != last_type:  # runs of one type are the common case: look up once per run
            last_type, family = type_, type_[:type_.index(".")]
            cur = open_.get(family)
            if cur is None:
                cur = open_[family] = [[], [], envelope, None]
        size = len(body) + 1
        if cur[1] and (len(cur[1]) >= max_events or cur[2] + size > max_bytes):
            closed.append((cur[1][0], family, cur))
            cur = open_[family] = [[], [], envelope, None]
        cur[0].append(body)
        cur[1].append(seq)
        cur[2] += size
        cur[3] = digest
    closed.extend((cur[1][0], family, cur) for family, cur in open_.items())
    closed.sort(key=lambda item: item[0])  # each family's batches stay in seq order
    out = []
    for _first, family, (bodies, seqs, _size, digest) in closed:
        out.append(Batch(topic_for(site, device, family), head + _SEP.join(bodies) + tail(seqs[-1], digest),
                         list(runs(seqs)), len(seqs)))
    return out


def topic_for(site: str, device: str, family: str) -> str:
    return topics.cmd_result(site, device) if family == RESULT_FAMILY else topics.events(site, device, family)


def envelope_head(store_id: str | None) -> bytes:
    return b'{"store":"%s",%s' % (store_id.encode(), _HEAD[1:]) if store_id else _HEAD


def tail(last_seq: int, digest: bytes) -> bytes:
    return _CHAIN % (last_seq, digest.hex().encode())
