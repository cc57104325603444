"""Group commit: the producers of one batch are committed together in the next, the
writer never waits long for a producer that does not come back, and close() still
finishes or refuses everything queued."""

from __future__ import annotations

import threading
import time

import pytest

from edge.errors import StoreClosed
from edge.store._writer import GroupCommitWriter, Job


def _writer(sizes: list[int], linger: float) -> GroupCommitWriter:
    def run_batch(jobs, before_commit):
        sizes.append(len(jobs))
        before_commit()
        for job in jobs:
            job.result = job.items

    writer = GroupCommitWriter(run_batch, lambda: None, batch_max=1000, idle_interval=60, linger=linger)
    writer.start()
    return writer


def test_every_batch_after_the_first_holds_every_waiting_producer():
    sizes: list[int] = []
    # Long enough that, on a loaded machine, only "all came back" ends the wait; the last
    # batches (producers finishing one round apart) each wait it out once.
    writer = _writer(sizes, linger=1.0)
    producers, rounds = 8, 25
    gate = threading.Barrier(producers)
    got: list[list] = [[] for _ in range(producers)]

    def produce(i):
        gate.wait()
        for n in range(rounds):
            got[i].append(writer.submit(Job(items=[(i, n)])).wait())

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    writer.close()
    assert got == [[[(i, n)] for n in range(rounds)] for i in range(producers)]
    assert sum(sizes) == producers * rounds
    # The first and last batches may catch producers that are a round apart; the rest
    # hold all of them: about one batch per round, where waking each batch's callers one
    # batch late made two half batches per round.
    # (A thread the loaded machine starts late joins a round or two after the others.)
    assert len(sizes) <= rounds * 1.5, sizes
    assert sizes.count(producers) >= rounds // 2, sizes


def test_a_producer_that_does_not_come_back_delays_the_others_by_the_linger_at_most():
    sizes: list[int] = []
    writer = _writer(sizes, linger=0.05)
    one, two = Job(items=[1]), Job(items=[2])
    writer.submit(one)
    writer.submit(two)
    assert one.wait() == [1] and two.wait() == [2]
    started = time.monotonic()
    assert writer.submit(Job(items=[3])).wait() == [3]  # the other producer is gone
    assert time.monotonic() - started < 5  # bounded by the linger (0.05 s), with slack for load
    writer.close()


def test_close_finishes_what_was_queued_and_refuses_what_came_after():
    sizes: list[int] = []
    writer = _writer(sizes, linger=0.001)
    jobs = [writer.submit(Job(items=[n])) for n in range(50)]
    writer.close()
    assert [job.wait() for job in jobs] == [[n] for n in range(50)]
    with pytest.raises(StoreClosed):  # a closed writer accepts no job
        writer.submit(Job(items=[99]))


def test_a_job_racing_close_is_refused_without_refusing_what_came_before():
    release = threading.Event()
    sizes: list[int] = []

    def run_batch(jobs, before_commit):
        sizes.append(len(jobs))
        release.wait(30)
        for job in jobs:
            job.result = job.items

    writer = GroupCommitWriter(run_batch, lambda: None, batch_max=1000, idle_interval=60, linger=0.001)
    writer.start()
    busy = writer.submit(Job(items=["busy"]))
    while not sizes:  # the writer is inside the first batch
        time.sleep(0.001)
    before = writer.submit(Job(items=["before"]))
    closing = threading.Thread(target=writer.close)
    closing.start()
    while not writer._closed.is_set():
        time.sleep(0.001)
    late = Job(items=["late"])  # what submit() does when close() wins the race after its check
    writer._put(late)
    writer._refuse_queued(after_stop=True)
    release.set()
    closing.join(30)
    assert busy.wait() == ["busy"] and before.wait() == ["before"]
    try:
        late.wait()
    except StoreClosed:
        pass
    else:
        raise AssertionError("a job queued after close() was written")
    assert not writer._thread.is_alive()


def test_a_caller_that_never_waits_does_not_hold_up_the_next_caller_of_its_batch():
    """The writer wakes a batch's first caller and each wakes the next; a caller that
    never calls wait() breaks that chain, and the writer wakes the rest after the linger."""
    release, inside = threading.Event(), threading.Event()
    batches: list[list] = []

    def run_batch(jobs, before_commit):
        batches.append([job.items[0] for job in jobs])
        inside.set()
        release.wait(30)
        for job in jobs:
            job.result = job.items

    writer = GroupCommitWriter(run_batch, lambda: None, batch_max=1000, idle_interval=60, linger=0.05)
    writer.start()
    first = writer.submit(Job(items=["first"]))
    assert inside.wait(10)  # the writer is inside the first batch: the next two queue up
    writer.submit(Job(items=["ignored"]))  # its caller never waits
    waiting = writer.submit(Job(items=["waiting"]))
    release.set()
    assert first.wait() == ["first"]
    started = time.monotonic()
    assert waiting.wait() == ["waiting"]
    assert time.monotonic() - started < 10
    assert batches == [["first"], ["ignored", "waiting"]]
    writer.close()
    assert not writer._thread.is_alive()


def _inline_writer(run_batch, linger: float = 0.05) -> GroupCommitWriter:
    writer = GroupCommitWriter(run_batch, lambda: None, batch_max=1000, idle_interval=60,
                               linger=linger, inline=True)
    writer.start()
    return writer


def test_inline_a_lone_job_commits_in_its_callers_thread_and_others_queue_behind_a_batch():
    threads: list[tuple[str, list]] = []
    inside, release = threading.Event(), threading.Event()

    def run_batch(jobs, before_commit):
        threads.append((threading.current_thread().name, [job.items[0] for job in jobs]))
        if jobs[0].items[0] == "slow":
            inside.set()
            release.wait(30)
        for job in jobs:
            job.result = job.items

    writer = _inline_writer(run_batch)
    assert writer.submit(Job(items=["alone"])).wait() == ["alone"]
    slow = threading.Thread(target=lambda: writer.submit(Job(items=["slow"])).wait(), name="slow-caller")
    slow.start()
    assert inside.wait(10)  # a batch runs in slow-caller's thread: these two queue for the writer
    queued = [writer.submit(Job(items=[n])) for n in ("a", "b")]
    release.set()
    assert [job.wait() for job in queued] == [["a"], ["b"]]
    slow.join(10)
    writer.close()
    me = threading.current_thread().name
    assert threads == [(me, ["alone"]), ("slow-caller", ["slow"]), ("store-writer", ["a", "b"])]


def test_inline_close_waits_for_a_batch_running_in_a_callers_thread():
    inside, release = threading.Event(), threading.Event()
    done: list[str] = []

    def run_batch(jobs, before_commit):
        inside.set()
        release.wait(30)
        done.append("committed")
        for job in jobs:
            job.result = job.items

    writer = _inline_writer(run_batch)
    caller = threading.Thread(target=lambda: writer.submit(Job(items=[1])).wait())
    caller.start()
    assert inside.wait(10)
    closing = threading.Thread(target=writer.close)
    closing.start()
    closing.join(0.3)
    assert closing.is_alive() and not done  # close() waits for the batch in the caller's thread
    release.set()
    closing.join(10)
    caller.join(10)
    assert done == ["committed"] and not closing.is_alive()
    with pytest.raises(StoreClosed):  # a closed writer accepts no job
        writer.submit(Job(items=[2]))


def test_inline_a_batch_that_breaks_in_a_callers_thread_stops_the_store_loudly():
    from edge.errors import StoreError

    def run_batch(jobs, before_commit):
        raise RuntimeError("disk I/O error")

    writer = _inline_writer(run_batch)
    job = writer.submit(Job(items=[1]))
    for attempt in (job.wait, lambda: writer.submit(Job(items=[2])).wait()):
        try:
            attempt()
        except StoreError as exc:
            assert "writer stopped" in str(exc) and "disk I/O error" in str(exc)
        else:
            raise AssertionError("a broken store accepted a job")
    writer._thread.join(10)
    assert not writer._thread.is_alive()
