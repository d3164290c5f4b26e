"""The Redis Streams adapter against a real private redis-server: atomic completion, reclaim, heartbeat, retries, dead letters."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ttg.broker import Broker, open_broker
from ttg.errors import BrokerUnavailable
from ttg.messages import TaskMessage
from ttg.servers.redis_server import PrivateRedis

RECLAIM_S = 1.0


@pytest.fixture
def run_id() -> str:
    return "t" + uuid.uuid4().hex[:8]


@pytest.fixture
def brokers(redis_url: str, run_id: str) -> Iterator[dict[str, Broker]]:
    opened: dict[str, Broker] = {}

    def make(name: str | None) -> Broker:
        b = open_broker(redis_url, run_id, consumer=name, max_deliveries=3, reclaim_after_s=RECLAIM_S)
        opened[name or "coordinator"] = b
        return b

    coord = make(None)
    coord.declare(4)
    coord.publish_tasks((i, TaskMessage(run_id, i, i * 10, i * 10 + 10).encode()) for i in range(4))
    make("a")
    make("b")
    yield opened
    for b in opened.values():
        b.close()
    coord.delete_run()


def test_complete_writes_the_result_once_and_counts_the_duplicate(brokers: dict[str, Broker]) -> None:
    a, b, coord = brokers["a"], brokers["b"], brokers["coordinator"]
    d = a.receive(1.0)
    assert d is not None and d.deliveries == 1
    a.complete(d, 0, b"result-0")
    b.complete(None, 0, b"result-0-again")  # a second result for chunk 0, as from a redelivered task
    assert a.drained() is False  # also sends anything a holds back
    assert coord.read_results(10, 0.5) == [b"result-0"]
    stats = coord.stats()
    assert (stats.completed, stats.duplicates) == (1, 1)


def test_a_worker_takes_fast_chunks_in_batches_and_loses_none(brokers: dict[str, Broker]) -> None:
    a, coord = brokers["a"], brokers["coordinator"]
    seen = []
    while (d := a.receive(0.5)) is not None:
        seen.append(d.token)
        a.complete(d, len(seen) - 1, b"r")
    assert len(set(seen)) == 4 and a.drained()
    assert len(coord.read_results(10, 0.5)) == 4 and coord.stats().inflight == 0


def test_a_crashed_consumers_chunk_is_taken_over_within_the_reclaim_bound(brokers: dict[str, Broker]) -> None:
    a, b = brokers["a"], brokers["b"]
    a._stop.set()  # a "crashes": no heartbeat, never completes
    taken = a.receive(1.0)
    assert taken is not None
    t0 = time.monotonic()
    seen = []
    while time.monotonic() - t0 < RECLAIM_S * 3:
        d = b.receive(0.2)
        if d is not None:
            seen.append(d)
            if d.token == taken.token:
                break
            b.complete(d, len(seen) + 10, b"x")
    took = time.monotonic() - t0
    assert seen and seen[-1].token == taken.token, "the crashed consumer's chunk was never reclaimed"
    assert seen[-1].deliveries == 2
    assert took <= RECLAIM_S + 0.5, f"takeover took {took:.2f}s, bound is {RECLAIM_S}s"


def test_heartbeat_keeps_a_slow_chunk_from_being_stolen(brokers: dict[str, Broker]) -> None:
    a, b = brokers["a"], brokers["b"]
    slow = a.receive(1.0)
    assert slow is not None
    others = []
    deadline = time.monotonic() + RECLAIM_S * 3  # three reclaim bounds while a "computes"
    while time.monotonic() < deadline:
        d = b.receive(0.2)
        if d is not None:
            assert d.token != slow.token, "a live worker's chunk was stolen"
            others.append(d)
            b.complete(d, 100 + len(others), b"x")
    assert len(others) == 3
    a.complete(slow, 0, b"slow")
    a.drained()
    assert brokers["coordinator"].stats().duplicates == 0


def test_a_failing_chunk_is_retried_then_dead_lettered_with_its_error(brokers: dict[str, Broker]) -> None:
    a, coord = brokers["a"], brokers["coordinator"]
    attempts = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and coord.stats().dead_lettered == 0:
        d = a.receive(0.3)
        if d is None:
            continue
        if d.body == TaskMessage(coord.run_id, 2, 20, 30).encode():
            attempts.append(d.deliveries)
            a.fail(d, "ValueError: boom", retry=True)
        else:
            a.complete(d, int(d.body[-1]), b"ok")
    assert attempts == [1, 2, 3]
    (dead,) = coord.dead_letters()
    assert (dead.chunk_id, dead.deliveries, dead.reason) == (2, 3, "ValueError: boom")
    assert coord.stats().dead_lettered == 1


def test_an_unreadable_message_is_dead_lettered_at_once(brokers: dict[str, Broker], redis_client: redis.Redis, run_id: str) -> None:
    coord, a = brokers["coordinator"], brokers["a"]
    redis_client.delete(f"ttg:{{{run_id}}}:tasks")
    coord.declare(4)
    redis_client.xadd(f"ttg:{{{run_id}}}:tasks", {"junk": "1"})
    d = a.receive(1.0)
    assert d is not None and d.body == b""
    a.fail(d, "malformed: no body", retry=False)
    (dead,) = coord.dead_letters()
    assert dead.chunk_id is None and "malformed" in dead.reason
    assert coord.stats().rejected == 1 and coord.stats().dead_lettered == 0


def test_runs_are_isolated_and_delete_run_touches_only_its_own_keys(redis_url: str, redis_client: redis.Redis) -> None:
    one, two = (open_broker(redis_url, f"iso{uuid.uuid4().hex[:6]}") for _ in range(2))
    redis_client.set("unrelated:key", "stay")
    for b in (one, two):
        b.declare(1)
        b.publish_tasks([(0, TaskMessage(b.run_id, 0, 0, 1).encode())])
    one.delete_run()
    assert two.stats().published == 1 and one.stats().published == 0
    assert redis_client.get("unrelated:key") == b"stay"
    two.delete_run()
    redis_client.delete("unrelated:key")
    assert not redis_client.keys(f"ttg:{{{two.run_id}}}:*")


def test_drained_once_every_chunk_is_completed_or_dead(brokers: dict[str, Broker]) -> None:
    a = brokers["a"]
    done = 0
    while not a.drained():
        d = a.receive(0.5)
        assert d is not None
        if done == 0:
            a.fail(d, "boom", retry=False)
        else:
            a.complete(d, done, b"r")
        done += 1
    assert done == 4


def test_with_aof_a_killed_and_restarted_broker_keeps_every_task_and_result(tmp_path: Path) -> None:
    with PrivateRedis(appendonly=True, data_dir=tmp_path / "data") as server:
        rid = "aof" + uuid.uuid4().hex[:6]
        coord = open_broker(server.url, rid)
        coord.declare(3)
        coord.publish_tasks((i, TaskMessage(rid, i, i, i + 1).encode()) for i in range(3))
        w = open_broker(server.url, rid, consumer="w", reclaim_after_s=RECLAIM_S)
        d = w.receive(1.0)
        assert d is not None
        w.complete(d, 0, b"r0")
        server.kill(signal.SIGKILL)
        with pytest.raises(BrokerUnavailable, match="Redis unreachable"):
            coord.stats()
        server.restart()
        stats = coord.stats()
        assert (stats.published, stats.completed) == (3, 1)
        assert coord.read_results(10, 0.5) == [b"r0"]
        got = {w.receive(2.0) for _ in range(2)}  # the prefetched chunk survived too, as a pending entry
        assert None not in got and len(got) == 2
        coord.delete_run()
        coord.close()
        w.close()


def test_ending_a_run_drains_it_for_the_workers_even_with_chunks_left(brokers: dict[str, Broker]) -> None:
    a, coord = brokers["a"], brokers["coordinator"]
    assert a.drained() is False
    coord.end_run()
    assert a.drained() is True


def test_a_closing_worker_gives_back_fetched_tasks_at_once(redis_url: str, run_id: str) -> None:
    coord = open_broker(redis_url, run_id)
    coord.declare(40)
    coord.publish_tasks((i, TaskMessage(run_id, i, i, i + 1).encode()) for i in range(40))
    a = open_broker(redis_url, run_id, consumer="a", reclaim_after_s=30.0)  # a crash would take 30 s to reclaim
    first = a.receive(1.0)
    assert first is not None
    a.complete(first, 0, b"r")  # fast chunk: a now fetches a batch ahead
    held = len(a._buffer)
    assert held >= 1
    a.close()  # a stops (SIGTERM) with its batch unstarted
    b = open_broker(redis_url, run_id, consumer="b", reclaim_after_s=30.0)
    got = []
    while (d := b.receive(0.5)) is not None:
        got.append(d)
        b.complete(d, len(got), b"r")
    assert len(got) == 39, "released tasks must be taken over without waiting for the 30 s reclaim bound"
    assert sum(d.deliveries == 2 for d in got) == held
    b.close()
    coord.delete_run()
    coord.close()
