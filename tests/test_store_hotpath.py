"""The store's fast path gives the same bytes, chain and seqs as the plain one.

The hot path serialises in the producer with a hole for the seq, inserts a batch
with a few multi-row statements and wakes callers one batch late; these tests pin
that none of it changes what is stored.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import EventInvalid
from edge.events import canonical_json, make_event, new_event_id, wire
from edge.store import Store
from edge.store._rows import _chunks

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Keys and strings that look like the envelope's own seq field, to fool a naive splice.
_tricky = st.sampled_from(["seq", ',"seq":0,', '"seq":0', "site", "priority", "ü\u2028"])


def _event(payload, source="bench"):
    return make_event(device="dev-1", site="site-1", type="sim.heartbeat", source=source,
                      payload=payload, priority="telemetry")


@settings(max_examples=200, deadline=None)
@given(payload=st.dictionaries(_tricky | st.text(max_size=8), _json | _tricky, max_size=6),
       source=_tricky.filter(lambda s: s.isascii() and s.isalnum()) | st.just("drv"),
       seq=st.integers(1, 2**63 - 1))
def test_prepared_body_with_seq_is_the_canonical_body(payload, source, seq):
    event = _event(payload, source)
    _id, _type, _prio, ts, head, tail = wire(event)
    expected = canonical_json({**event.model_dump(mode="json"), "seq": seq})
    assert head + str(seq).encode() + tail == expected
    assert ts == event.model_dump(mode="json")["ts"]


def test_event_ids_are_random_uuid4():
    ids = {new_event_id() for _ in range(5000)}
    assert len(ids) == 5000
    for value in list(ids)[:500]:
        parsed = uuid.UUID(value)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == value


def test_event_ids_differ_between_a_parent_and_its_forked_child():
    import os

    new_event_id()  # the pool now holds bytes a forked child must not reuse
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        os.write(write, "\n".join(new_event_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_event_id() for _ in range(50)}
    assert len(child) == 50 and not child & parent


def test_chunks_cover_any_batch_with_few_statements():
    for rows in range(1, 600):
        chunks = list(_chunks(rows))
        assert sum(chunks) == rows
        assert all(c & (c - 1) == 0 and c <= 128 for c in chunks)
        assert len(chunks) <= rows // 128 + 7


def test_batches_of_every_shape_store_exact_bytes_and_an_intact_chain(tmp_path):
    store = Store(tmp_path, device="dev-1", site="site-1")
    try:
        returned = []
        for size in (1, 2, 3, 7, 128, 129, 300):
            returned += store.append_many([_event({"n": i, "seq": 0}) for i in range(size)])
        returned.append(store.append(_event({"last": True})))
        rows = store._w.execute("SELECT seq, id, body FROM events ORDER BY seq").fetchall()
        assert [r[0] for r in rows] == [e.seq for e in returned]
        assert [r[1] for r in rows] == [e.id for e in returned]
        assert [r[2] for r in rows] == [e.canonical_bytes() for e in returned]
        assert store.verify().ok
    finally:
        store.close()


def test_concurrent_producers_are_folded_and_each_gets_its_own_seq(tmp_path):
    store = Store(tmp_path, device="dev-1", site="site-1")
    per_thread, threads = 60, 16
    results: list[list] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def produce(i):
        start.wait()
        for n in range(per_thread):
            results[i].append(store.append(_event({"t": i, "n": n})))

    workers = [threading.Thread(target=produce, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    try:
        seqs = sorted(e.seq for r in results for e in r)
        assert seqs == list(range(seqs[0], seqs[0] + threads * per_thread))
        for r in results:  # one producer's appends are stored in its own order
            assert [e.seq for e in r] == sorted(e.seq for e in r)
        writer = store._writer
        assert writer.jobs == threads * per_thread
        assert writer.batches < writer.jobs  # group commit folded concurrent appends
        assert store.verify().ok
    finally:
        store.close()


def test_a_fresh_store_does_not_load_numpy_into_the_daemon(tmp_path):
    """Migrating must not leave sqlite_utils or numpy in a process that never asked for them."""
    import subprocess
    import sys

    code = ("import sys\nfrom edge.store import Store\n"
            f"Store({str(tmp_path)!r}, device='d', site='s').close()\n"
            "assert 'numpy' not in sys.modules, 'numpy was imported'\n"
            "assert 'sqlite_utils' not in sys.modules, 'sqlite_utils was imported'\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert (tmp_path / "events.db").exists()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_writer_that_dies_fails_its_callers_instead_of_hanging_them():
    """If the writer thread ever dies (a bug, an error in maintenance), appends raise."""
    from edge.errors import StoreError
    from edge.store._writer import GroupCommitWriter, Job

    def run_batch(jobs, before_commit):
        before_commit()
        for job in jobs:
            job.result = "stored"

    def broken_maintenance():
        raise RuntimeError("disk I/O error")

    writer = GroupCommitWriter(run_batch, broken_maintenance, batch_max=10, idle_interval=0.2)
    writer.start()
    assert writer.submit(Job(items=[1])).wait() == "stored"
    writer._thread.join(timeout=30)  # maintenance is due after 0.2 s and kills the thread
    assert not writer._thread.is_alive()
    try:
        writer.submit(Job(items=[2])).wait()
    except StoreError as exc:
        assert "writer stopped" in str(exc) and "disk I/O error" in str(exc)
    else:
        raise AssertionError("an append after the writer died did not fail")


def test_appended_events_get_their_seq_once_committed_and_a_repeat_is_a_copy(tmp_path):
    """append_many returns the events it was given, each with its seq set at the commit; the
    same event twice in one call is stored twice (as before), the second as a copy; an event
    already stored is refused rather than stored again under the same id."""
    store = Store(tmp_path, device="dev-1", site="site-1")
    try:
        first, second = _event({"n": 1}), _event({"n": 2})
        stored = store.append_many([first, second, first])
        assert stored[0] is first and stored[1] is second and stored[2] is not first
        assert [e.seq for e in stored] == [1, 2, 3] and stored[2].id == first.id
        assert first.model_fields_set == stored[2].model_fields_set and "seq" in first.model_fields_set
        bodies = [r[0] for r in store._w.execute("SELECT body FROM events ORDER BY seq")]
        assert bodies == [e.canonical_bytes() for e in stored]
        assert b'"seq":3,' in bodies[2] and bodies[2].replace(b'"seq":3,', b'"seq":1,') == bodies[0]
        with pytest.raises(EventInvalid, match="already has seq 1"):
            store.append(first)
        assert store.verify().ok and store.stats()["pending"] == 3
    finally:
        store.close()


def test_an_event_refused_for_space_keeps_no_seq_and_can_be_stored_later(tmp_path):
    from edge.config import StoreSettings
    from edge.errors import StoreFull

    store = Store(tmp_path, device="dev-1", site="site-1", settings=StoreSettings(max_bytes=64 * 1024))
    try:
        big = {"pad": "p" * 2000}
        normals = [store.append(make_event(device="dev-1", site="site-1", type="sim.x", source="t",
                                           payload=big)) for _ in range(40)]  # past the cap
        # Bigger than the room the normal events left, and telemetry may not evict them.
        refused = make_event(device="dev-1", site="site-1", type="sim.x", source="t",
                             payload={"pad": "p" * 6000}, priority="telemetry")
        with pytest.raises(StoreFull):
            store.append(refused)
        assert refused.seq is None and "seq" not in refused.model_fields_set
        store.mark_acked([e.seq for e in normals])  # acked history may go: room again
        assert store.append(refused) is refused and refused.seq > normals[-1].seq
        assert store.verify().ok
    finally:
        store.close()


def test_a_lone_append_is_committed_in_its_callers_thread(tmp_path):
    """No hand-off to the writer thread and back when nobody else is appending; listeners
    are called on the thread that committed."""
    store = Store(tmp_path, device="dev-1", site="site-1")
    seen: list[tuple[str, list[int]]] = []
    store.add_listener(lambda events: seen.append((threading.current_thread().name, [e.seq for e in events])))
    try:
        stored = store.append_many([_event({"n": n}) for n in range(3)])
        assert seen == [(threading.current_thread().name, [e.seq for e in stored])]
        assert store._writer.batches == 1 and store.verify().ok
    finally:
        store.close()


def test_a_batch_that_does_not_fit_whole_is_decided_job_by_job(tmp_path):
    """Several appends in one batch are chained in one pass only when all fit; on a full
    store each is decided on its own: the telemetry refused, the alarm and the normal
    event stored (evicting older normal events), the chain intact."""
    from edge.config import StoreSettings
    from edge.errors import StoreFull
    from edge.store._writer import Job

    store = Store(tmp_path, device="dev-1", site="site-1", settings=StoreSettings(max_bytes=64 * 1024))
    try:
        def ev(priority, size):
            return make_event(device="dev-1", site="site-1", type="sim.x", source="t",
                              payload={"pad": "p" * size}, priority=priority)

        for _ in range(40):
            store.append(ev("normal", 2000))
        jobs = [Job(items=[ev(p, size)]) for p, size in (("telemetry", 6000), ("alarm", 3000),
                                                         ("normal", 100))]
        for job in jobs:
            wire(job.items[0])  # what append_many does before it submits
        with store._writer._busy:  # the writer is idle; this thread runs the batch
            store._run_batch(jobs)
        assert isinstance(jobs[0].error, StoreFull) and jobs[0].items[0].seq is None
        (alarm,), (normal,) = jobs[1].result, jobs[2].result
        assert jobs[1].error is jobs[2].error is None and normal.seq == alarm.seq + 1
        assert store.verify().ok
    finally:
        store.close()
