"""The Broker interface's contract, checked on each backend through the interface alone.

The same assertions run against a real private redis-server and rabbitmq-server
(ids ``[redis]`` / ``[rabbitmq]``). Backend internals (heartbeats, batching,
topology) have their own test modules.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from ttg.broker import Broker, Delivery, open_broker
from ttg.errors import RunConflict
from ttg.messages import TaskMessage, decode_task
from ttg.plan import ChunkPlan
from ttg.producer import publish_plan

from .backends import publish_raw_task

RECLAIM_S = 1.0
Opener = Callable[..., Broker]


@pytest.fixture
def run_id() -> str:
    return "c" + uuid.uuid4().hex[:8]


@pytest.fixture
def opener(broker_url: str, run_id: str) -> Iterator[Opener]:
    """Open brokers for one run; every one is closed, and the run deleted, afterwards."""
    opened: list[Broker] = []

    def make(consumer: str | None = None, **options: object) -> Broker:
        options.setdefault("reclaim_after_s", RECLAIM_S)
        b = open_broker(broker_url, str(options.pop("run", run_id)), consumer=consumer, **options)  # type: ignore[arg-type]
        opened.append(b)
        return b

    yield make
    for b in reversed(opened):
        b.close()
    cleanup = open_broker(broker_url, run_id)
    cleanup.delete_run()
    cleanup.close()


def publish(coord: Broker, chunks: int) -> None:
    coord.declare(chunks)
    publish_plan(coord, ChunkPlan(chunks * 10, 10))


def take_all(worker: Broker, wait_s: float = 1.0) -> list[Delivery]:
    """Every delivery until none comes for ``wait_s``, each completed (a RabbitMQ worker takes no more than its
    prefetch of task messages until it settles them)."""
    got = []
    while (d := worker.receive(wait_s)) is not None:
        got.append(d)
        worker.complete(d, decode_task(d.body).chunk_id, b"r")
    return got


def collect(coord: Broker, want: int, timeout_s: float = 10.0) -> list[bytes]:
    out: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < want and time.monotonic() < deadline:
        out += coord.read_results(100, 0.2)
    return out


def test_every_published_chunk_is_delivered_once_and_its_result_reaches_the_coordinator(opener: Opener) -> None:
    coord, a = opener(), opener("a")
    publish(coord, 20)
    seen = []
    while len(seen) < 20 and (d := a.receive(2.0)) is not None:
        task = TaskMessage(coord.run_id, len(seen), 0, 0)  # ids come from the body, as the worker reads them
        seen.append(d)
        assert d.deliveries == 1
        a.complete(d, len(seen) - 1, f"r{task.chunk_id}".encode())
    assert len(seen) == 20 and a.receive(0.3) is None
    a.drained()  # sends anything held back
    results = collect(coord, 20)
    assert sorted(results) == sorted(f"r{i}".encode() for i in range(20))
    assert coord.stats().published == 20


def test_a_plan_is_published_as_exactly_the_tasks_the_producer_frames_byte_for_byte(opener: Opener) -> None:
    # Redis builds task bodies on the server (a Lua script packs the integers): they must be the bytes TaskMessage
    # encodes, at every width msgpack packs an integer in (fixint, uint8, uint16, uint32, uint64), and only for the ids
    # asked for (a resumed run publishes what its ledger lacks).
    coord, a = opener(), opener("a")
    plan = ChunkPlan(2**33, 1)
    ids = [range(0, 2), range(126, 130), range(254, 258), range(65534, 65538), range(2**32 - 2, 2**32 + 2)]
    coord.declare(plan.chunks)
    assert coord.publish_plan(plan, ids) == 18
    bodies = [d.body for d in take_all(a)]
    want = [TaskMessage(coord.run_id, c, c, c + 1).encode() for r in ids for c in r]
    assert sorted(bodies) == sorted(want)
    assert coord.stats().published == 18


def test_a_plan_past_exact_doubles_is_published_byte_for_byte_too(opener: Opener) -> None:
    # Lua's numbers are doubles, exact only up to 2^53: Redis publishes such a plan's tasks from Python.
    coord, a = opener(), opener("a")
    plan = ChunkPlan(2**60 + 3, 2**40)
    ids = [range(plan.chunks - 3, plan.chunks)]  # the last one short: [2^60, 2^60 + 3)
    coord.declare(plan.chunks)
    assert coord.publish_plan(plan, ids) == 3
    want = [TaskMessage(coord.run_id, c, plan.chunk(c).start, plan.chunk(c).stop).encode() for c in ids[0]]
    assert sorted(d.body for d in take_all(a)) == sorted(want)


def test_a_second_completion_of_a_chunk_is_returned_too_for_the_ledger_to_judge(opener: Opener) -> None:
    """A chunk id in a completion is only a claim: were a broker to drop a second one, a forged first completion (junk
    in its result) would silence the genuine one. Every result reaches the ledger, which drops and counts duplicates."""
    coord, a, b = opener(), opener("a"), opener("b")
    publish(coord, 1)
    d = a.receive(2.0)
    assert d is not None
    a.complete(d, 0, b"result-0")
    b.complete(None, 0, b"result-0-again")  # a second result for chunk 0, as from a redelivered task
    a.drained()
    b.drained()
    assert sorted(collect(coord, 2, timeout_s=2.0)) == [b"result-0", b"result-0-again"]


def test_a_reopened_chunk_is_delivered_again_and_its_new_result_is_not_a_duplicate(backend: str, opener: Opener) -> None:
    """Its completion was acknowledged but its result could not be recorded (a claim check whose values were gone)."""
    coord, a = opener(), opener("a")
    publish(coord, 2)
    for chunk in range(2):
        d = a.receive(2.0)
        assert d is not None
        a.complete(d, chunk, f"first-{chunk}".encode())
    a.drained()
    assert sorted(collect(coord, 2)) == [b"first-0", b"first-1"]
    assert coord.reopen(1, TaskMessage(coord.run_id, 1, 10, 20).encode())
    d = a.receive(2.0)
    assert d is not None and d.body == TaskMessage(coord.run_id, 1, 10, 20).encode() and a.receive(0.3) is None
    a.complete(d, 1, b"again-1")
    a.drained()
    assert collect(coord, 1) == [b"again-1"], "a broker that remembers completed chunks forgot this one"
    stats = coord.stats()
    assert (stats.duplicates, stats.queued, stats.inflight, stats.published - stats.completed) == (0, 0, 0, 0), stats  # the counts add up
    if backend == "redis":  # the broker that remembers completed chunks puts one back once (RabbitMQ: a copy is a duplicate)
        assert coord.reopen(0, TaskMessage(coord.run_id, 0, 0, 10).encode())
        assert not coord.reopen(0, TaskMessage(coord.run_id, 0, 0, 10).encode())  # a retry after a lost reply: one task, not two
        assert a.receive(2.0) is not None and a.receive(0.5) is None


def test_a_failing_chunk_is_retried_after_a_delay_then_dead_lettered_with_its_error(opener: Opener) -> None:
    coord, a = opener(), opener("a", max_deliveries=3)
    publish(coord, 4)
    poison = TaskMessage(coord.run_id, 2, 20, 30).encode()
    attempts = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and coord.stats().dead_lettered == 0:
        d = a.receive(0.3)
        if d is None:
            continue
        if d.body == poison:
            attempts.append(d.deliveries)
            a.fail(d, "ValueError: boom", retry=True)
        else:
            a.complete(d, 0, b"ok")
    assert attempts == [1, 2, 3]
    (dead,) = coord.dead_letters()
    assert (dead.chunk_id, dead.deliveries, dead.reason) == (2, 3, "ValueError: boom")
    assert coord.stats().dead_lettered == 1
    assert coord.dead_letters() == [dead], "reading dead letters must not consume them"


def test_a_rejected_message_leaves_the_queue_at_once_and_never_counts_as_a_chunk_death(backend: str, broker_url: str, opener: Opener) -> None:
    coord, a = opener(), opener("a")
    coord.declare(1)
    publish_raw_task(backend, broker_url, coord.run_id, b"\xc1junk")
    d = a.receive(2.0)
    assert d is not None and d.body == b"\xc1junk"
    a.reject(d, "rejected: not valid msgpack")
    deadline = time.monotonic() + 5
    while not coord.rejections() and time.monotonic() < deadline:
        time.sleep(0.05)
    (rejected,) = coord.rejections()
    assert "not valid msgpack" in rejected.reason and rejected.body == b"\xc1junk"
    assert coord.dead_letters() == [], "a rejected message is not a dead letter"
    stats = coord.stats()
    assert stats.rejected == 1 and stats.dead_lettered == 0
    assert a.receive(0.5) is None, "a rejected message must not come back"


def test_one_coordinator_per_run_the_lease_is_refused_while_held_and_free_once_released(opener: Opener) -> None:
    first, second_same_run = opener(), opener()
    first.claim("host-a/1/x")
    with pytest.raises(RunConflict, match="another coordinator"):
        second_same_run.claim("host-b/2/y")
    t0 = time.monotonic()
    with pytest.raises(RunConflict):
        second_same_run.claim("host-b/2/y", wait_s=0.5)
    assert time.monotonic() - t0 >= 0.4, "claim waits up to wait_s for the lease to lapse"
    first.release()
    second_same_run.claim("host-b/2/y")  # free once released
    second_same_run.release()


def test_a_dead_local_coordinators_lease_is_taken_over_at_once(opener: Opener) -> None:
    import socket
    import subprocess
    import sys

    first = opener()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead_owner = f"{socket.gethostname()}/{gone.stdout.strip()}/dead"
    if first.__class__.__name__ == "RabbitMQBroker":
        pytest.skip("RabbitMQ's lease is an exclusive queue: the broker frees it when the holder's connection closes")
    first.claim(dead_owner)
    first._lease_stop.set()  # type: ignore[attr-defined]  # as if that process had been SIGKILLed: no more refreshes
    successor = opener()
    successor.claim("me/1/z")  # the holder's pid is gone on this host: no wait for its TTL
    successor.release()


def test_has_state_tells_a_declared_run_from_a_new_one(opener: Opener) -> None:
    coord = opener()
    assert coord.has_state() is False
    coord.claim("host/1/x")
    assert coord.has_state() is False, "the lease alone is not state"
    coord.declare(3)
    assert coord.has_state() is True
    coord.delete_run()
    assert coord.has_state() is False
    coord.release()


def test_runs_on_one_broker_are_isolated_and_delete_run_removes_only_its_own(opener: Opener) -> None:
    one, two = opener(run="iso" + uuid.uuid4().hex[:6]), opener(run="iso" + uuid.uuid4().hex[:6])
    for coord in (one, two):
        publish(coord, 1)
    one.delete_run()
    w_two = opener("w", run=two.run_id)
    d = w_two.receive(2.0)
    assert d is not None and d.body == TaskMessage(two.run_id, 0, 0, 10).encode()
    w_one = opener("w", run=one.run_id)
    assert w_one.receive(0.5) is None
    two.delete_run()


def test_ending_a_run_drains_it_for_its_workers_even_with_chunks_left(opener: Opener) -> None:
    coord, a = opener(), opener("a")
    publish(coord, 3)
    assert a.drained() is False
    coord.end_run()
    deadline = time.monotonic() + 3
    while not a.drained() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a.drained() is True


def test_a_worker_that_stops_gives_back_the_tasks_it_held_at_once(opener: Opener) -> None:
    coord = opener()
    publish(coord, 40)
    a = opener("a", reclaim_after_s=30.0)  # a crash would take 30 s to reclaim
    first = a.receive(2.0)
    assert first is not None
    a.complete(first, 0, b"r")
    a.receive(2.0)  # a now holds more than it computes
    a.close()  # a stops (SIGTERM) with tasks unstarted
    b = opener("b", reclaim_after_s=30.0)
    t0 = time.monotonic()
    got = []
    while (d := b.receive(1.0)) is not None:
        got.append(d)
        b.complete(d, len(got), b"r")
    assert len(got) == 39, "given-back tasks must be taken over without waiting for the 30 s reclaim bound"
    assert time.monotonic() - t0 < 10
    assert any(d.deliveries == 2 for d in got), "the tasks a held count that delivery"
