"""Redis Streams internals against a real private redis-server: batching, reclaim bound, heartbeat, AOF.

The behaviour every backend shares is in test_broker_contract.py."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ttg.broker import Broker, open_broker
from ttg.brokers.redis.broker import RedisStreamsBroker
from ttg.brokers.redis.server import PrivateRedis
from ttg.errors import BrokerUnavailable
from ttg.plan import ChunkPlan
from ttg.producer import publish_plan

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
    publish_plan(coord, ChunkPlan(40, 10))
    make("a")
    make("b")
    yield opened
    for b in opened.values():
        b.close()
    coord.delete_run()


def test_a_worker_takes_fast_chunks_in_batches_and_loses_none(brokers: dict[str, Broker]) -> None:
    a, coord = brokers["a"], brokers["coordinator"]
    seen = []
    while (d := a.receive(0.5)) is not None:
        seen.append(d.token)
        a.complete(d, len(seen) - 1, b"r")
    assert len(set(seen)) == 4 and a.drained() is False
    assert len(coord.read_results(10, 0.5)) == 4 and coord.stats().inflight == 0


def test_a_worker_that_holds_a_batch_of_chunks_is_sized_by_its_pace_not_by_how_long_it_holds_each(redis_url: str, run_id: str) -> None:
    # A worker keeps two batches of chunks in its compute child, so it holds each chunk for a whole batch. Sizing the
    # next fetch by that hold (25 ms here, more than BATCH_TARGET_S) made fetches shrink to one chunk each (ttg bench,
    # chunk 1,000: 0.96 round trips per chunk). Its pace is 16 chunks per 25 ms: a fetch should hold about 12.
    coord = open_broker(redis_url, run_id)
    worker = open_broker(redis_url, run_id, consumer="w", reclaim_after_s=RECLAIM_S)
    try:
        coord.declare(400)
        publish_plan(coord, ChunkPlan(4000, 10))
        fetched: list[int] = []
        done = 0
        for _ in range(8):
            held = [d for d in (worker.receive(0.5) for _ in range(16)) if d is not None]
            time.sleep(0.025)
            for d in held:
                worker.complete(d, done, b"r")
                done += 1
            fetched.append(worker._batch)  # type: ignore[attr-defined]
        assert min(fetched[2:]) >= 8, f"fetch sizes {fetched}"
    finally:
        worker.close()
        coord.delete_run()
        coord.close()


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


def test_with_aof_a_killed_and_restarted_broker_keeps_every_task_and_result(tmp_path: Path) -> None:
    with PrivateRedis(appendonly=True, data_dir=tmp_path / "data") as server:
        rid = "aof" + uuid.uuid4().hex[:6]
        coord = open_broker(server.url, rid)
        coord.declare(3)
        publish_plan(coord, ChunkPlan(3, 1))
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


def test_an_exited_workers_chunks_are_adopted_by_the_next_fetch_not_after_the_reclaim_bound(redis_url: str, run_id: str) -> None:
    # A 600 s reclaim bound: only the coordinator's release of the exited worker can move its chunk in this test.
    def make(name: str | None, max_deliveries: int = 3) -> Broker:
        return open_broker(redis_url, run_id, consumer=name, max_deliveries=max_deliveries, reclaim_after_s=600.0)

    coord = make(None)
    coord.declare(4)
    publish_plan(coord, ChunkPlan(40, 10))
    a, ab, b = make("pod-a.7"), make("pod-ab.8"), make("pod-b.9")
    try:
        held, other = a.receive(1.0), ab.receive(1.0)
        assert held is not None and other is not None
        a._stop.set()  # a "dies": no heartbeat, never completes, never closes
        assert coord.release_exited("pod-a.70") == 0, "a key matches a consumer's exact name, or a prefix up to its '.'"
        assert coord.release_exited("pod-a") == 1, "pod-a.7 held one chunk; pod-ab.8 is another worker"
        assert coord.stats().inflight == 2, "the exited worker's chunk is pending still, with the orphans"
        got = [d for d in (b.receive(1.0), b.receive(1.0)) if d is not None]
        assert [d.token for d in got][:1] == [held.token], "the next fetch adopts the orphan before new tasks"
        assert got[0].deliveries == 2
        assert coord.stats().consumers == 2, "the released consumer left the group; the orphans' holder is no worker"
        assert coord.release_exited("pod-ab") == 1  # its chunk goes the same way; b adopts it within one fetch
        again = b.receive(1.0)
        assert again is not None and again.token == other.token and again.deliveries == 2
    finally:
        for x in (a, ab, b):
            x.close()
        coord.delete_run()
        coord.close()


def test_an_orphan_past_its_max_deliveries_is_dead_lettered_when_adopted(redis_url: str, run_id: str) -> None:
    coord = open_broker(redis_url, run_id, max_deliveries=1, reclaim_after_s=600.0)
    coord.declare(1)
    publish_plan(coord, ChunkPlan(10, 10))
    a = open_broker(redis_url, run_id, consumer="w0.1", max_deliveries=1, reclaim_after_s=600.0)
    b = open_broker(redis_url, run_id, consumer="w1.2", max_deliveries=1, reclaim_after_s=600.0)
    try:
        assert a.receive(1.0) is not None
        a._stop.set()
        assert coord.release_exited("w0.1") == 1
        assert b.receive(0.5) is None
        (dead,) = coord.dead_letters()
        assert dead.chunk_id == 0 and "exited" in dead.reason and coord.stats().inflight == 0
    finally:
        a.close()
        b.close()
        coord.delete_run()
        coord.close()


def test_a_resume_of_many_scattered_chunks_is_published_once_each_even_when_the_server_forgot_its_scripts(
    redis_url: str, run_id: str, redis_client: redis.Redis
) -> None:
    # A resumed run's ledger may leave thousands of short runs of ids: their PUBLISH_PLAN calls go 64 to a round trip.
    # A server that lost its scripts (a restart) answers NOSCRIPT to a whole pipeline; each of those calls runs again
    # once, none twice, none never.
    coord = open_broker(redis_url, run_id)
    try:
        plan = ChunkPlan(1_000, 1)
        ids = [range(c, c + 1) for c in range(0, 400, 2)] + [range(600, 1_000)]  # 200 single ids, then one run of 400
        coord.declare(plan.chunks)
        redis_client.script_flush()
        assert coord.publish_plan(plan, ids) == 600
        assert isinstance(coord, RedisStreamsBroker)
        published = [int(f[b"c"]) for _, f in redis_client.xrange(coord.k_tasks)]
        assert sorted(published) == [*range(0, 400, 2), *range(600, 1_000)]
        assert coord.stats().published == 600
    finally:
        coord.delete_run()
        coord.close()
