"""A batch message: stored event bytes of one family joined in one envelope.

``{"store": ..., "events": [<stored bytes>, ...], "chain": {"seq": ..., "hash": ...}}``:
the events are the canonical bytes the store holds, joined, never re-serialised.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate, groupby
from operator import add, itemgetter

from edge.mqtt import topics
from edge.seqranges import runs

_HEAD, _SEP = b'{"events":[', b","
# Each batch ends with the audit chain's head at its last event: central records the heads it
# received, and `edge audit verify --heads` later proves the local chain was not rewritten.
_CHAIN = b'],"chain":{"seq":%d,"hash":"%s"}}'
RESULT_FAMILY = "command"  # command.result events go to cmd/result, not events/command


class Batch:
    """One message: events of one family, in seq order. Its PUBACK acknowledges ``seqs`` (a
    packed batch) or every pending event of ``span`` (first, last) (a fast-path batch: all
    of them are in the message)."""

    __slots__ = ("topic", "payload", "count", "seqs", "span")

    def __init__(self, topic: str, payload: bytes, *, seqs: list[int] | None = None,
                 span: tuple[int, int] | None = None, count: int | None = None):
        self.topic, self.payload, self.seqs, self.span = topic, payload, seqs, span
        self.count = len(seqs) if seqs is not None else count

    @property
    def first(self) -> int:
        return self.span[0] if self.span else self.seqs[0]

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return [self.span] if self.span else list(runs(self.seqs))


def pack(rows, *, site: str, device: str, max_events: int, max_bytes: int,
         store_id: str | None = None) -> list[Batch]:
    """Group (seq, type, body, chain hash) rows in seq order into per-family batches, each in seq order.

    A family's batch closes when it reaches ``max_events`` or would pass
    ``max_bytes`` (a single event larger than that still goes, alone). ``store_id``
    goes in each envelope (``{"store": ..., "events": [...]}``). No Python loop per
    row: columns are taken with map, families split with one stable sort, batch
    ends found by bisecting running sizes (a mixed backlog goes this way).
    """
    if not rows:
        return []
    head = envelope_head(store_id)
    budget = max_bytes - (len(head) + len(_CHAIN) + 20 + 64)  # for the bodies, each with its comma
    types = list(map(itemgetter(1), rows))
    family_of = {t: t[:t.index(".")] for t in set(types)}
    if len(set(family_of.values())) == 1:
        groups = [(family_of[types[0]], rows)]
    else:
        keys = list(map(family_of.__getitem__, types))
        order = sorted(range(len(rows)), key=keys.__getitem__)  # stable: seq order in each family
        groups = [(family, list(map(rows.__getitem__, idx))) for family, idx in groupby(order, keys.__getitem__)]
    out = []
    for family, part in groups:
        topic = topic_for(site, device, family)
        seqs, bodies = list(map(itemgetter(0), part)), list(map(itemgetter(2), part))
        sizes = list(map(add, accumulate(map(len, bodies), initial=0), range(len(bodies) + 1)))  # + commas
        start, n = 0, len(part)
        while start < n:
            end = min(n, start + max_events)
            if sizes[end] - sizes[start] > budget:
                end = max(start + 1, bisect_right(sizes, sizes[start] + budget, start + 1, end + 1) - 1)
            body = b"".join((head, _SEP.join(bodies[start:end]), tail(seqs[end - 1], part[end - 1][3])))
            out.append(Batch(topic, body, seqs=seqs[start:end]))
            start = end
    if len(groups) > 1:
        out.sort(key=lambda batch: batch.seqs[0])  # each family's batches stay in seq order
    return out


def topic_for(site: str, device: str, family: str) -> str:
    return topics.cmd_result(site, device) if family == RESULT_FAMILY else topics.events(site, device, family)


def envelope_head(store_id: str | None) -> bytes:
    return b'{"store":"%s",%s' % (store_id.encode(), _HEAD[1:]) if store_id else _HEAD


def tail(last_seq: int, digest: bytes) -> bytes:
    return _CHAIN % (last_seq, digest.hex().encode())
