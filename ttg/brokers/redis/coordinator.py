"""The coordinator's half of the Redis Streams broker: the run's lease (a key refreshed by its own thread), declaring
the run, publishing the plan, reading results and dead letters, counts, ending and deleting the run. A mixin of
:class:`~ttg.brokers.redis.broker.RedisStreamsBroker`, which holds the state both halves share (the connection, the
run's keys) and the worker's half.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import cast

import redis

from ttg import lease
from ttg.broker import BrokerStats, DeadLetter
from ttg.brokers.redis import lua as redis_lua
from ttg.brokers.redis.client import MAX_BLOCK_MS, Entry, connect, run_script, run_scripts, stream_entries, translate
from ttg.errors import RunConflict
from ttg.messages import task_frame
from ttg.plan import ChunkPlan

log = logging.getLogger(__name__)

GROUP = "workers"  # the consumer group every worker of a run reads its tasks through
# Chunks a PUBLISH_PLAN script adds at once: about 1 ms of the server's time, so the workers' calls are not kept waiting.
PUBLISH_BLOCK = 500
# PUBLISH_PLAN calls sent in one round trip: a resume's ledger may leave many short runs of ids, each a call. Redis runs
# a pipeline's calls back to back, so a round trip also stops at PIPELINE_CHUNKS: workers wait no longer than before.
PIPELINE_BLOCKS = 64
PIPELINE_CHUNKS = PUBLISH_BLOCK


class CoordinatorSide:
    """The coordinator's calls of a RedisStreamsBroker."""

    # Set by RedisStreamsBroker.__init__.
    url: str
    run_id: str
    r: redis.Redis
    k_tasks: str
    k_results: str
    k_dead: str
    k_rejected: str
    k_meta: str
    k_owner: str
    _keys: list[str]
    _results_cursor: bytes
    _owner: str | None
    _lease_stop: threading.Event
    _lease_thread: threading.Thread | None

    # -- the run's lease ----------------------------------------------------
    @translate
    def claim(self, owner: str, *, wait_s: float = 0.0) -> None:
        deadline = time.monotonic() + wait_s
        ttl_ms = int(lease.LEASE_TTL_S * 1000)
        while True:
            holder = run_script(self.r, redis_lua.CLAIM_LEASE, [self.k_owner], [owner, ttl_ms, ""]).decode()
            if holder != owner and lease.holder_is_dead(holder):
                log.warning("taking over run %s from its dead coordinator (%s)", self.run_id, lease.describe(holder))
                holder = run_script(self.r, redis_lua.CLAIM_LEASE, [self.k_owner], [owner, ttl_ms, holder]).decode()
            if holder == owner:
                break
            if time.monotonic() >= deadline:
                raise RunConflict(
                    f"run {self.run_id} is being run by another coordinator ({lease.describe(holder)}); wait for it to finish, or pick another --run-id"
                )
            time.sleep(0.2)
        if self._lease_thread is not None and self._lease_thread.is_alive() and self._owner == owner:
            return  # claimed again by its holder (a retry across a broker blip): its refresher already runs
        self._owner = owner
        self._lease_stop.clear()
        self._lease_thread = threading.Thread(target=self._keep_lease, args=(owner,), name="ttg-lease", daemon=True)
        self._lease_thread.start()

    def _keep_lease(self, owner: str) -> None:
        # Its own connection, so a refresh never waits behind the collector's blocking read.
        client = connect(self.url)
        ttl_ms = int(lease.LEASE_TTL_S * 1000)
        try:
            while not self._lease_stop.wait(lease.REFRESH_EVERY_S):
                try:
                    if not run_script(client, redis_lua.REFRESH_LEASE, [self.k_owner], [owner, ttl_ms]):
                        log.error("run %s: another coordinator took this run's lease", self.run_id)
                        return
                except redis.RedisError as e:  # a broker outage: the next refresh may get through, well within the TTL
                    log.warning("could not refresh the run's lease: %s", e)
        finally:
            client.close()

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is None:
            return
        self._lease_stop.set()
        if self._lease_thread is not None:
            self._lease_thread.join(timeout=5)
        try:
            run_script(self.r, redis_lua.RELEASE_LEASE, [self.k_owner], [owner])
        except redis.RedisError as e:  # the lease lapses on its own within its TTL
            log.warning("could not release the run's lease: %s", e)

    @translate
    def has_state(self) -> bool:
        return bool(self.r.exists(*self._keys))

    # -- coordinator side ---------------------------------------------------
    @translate
    def declare(self, chunks: int, *, workers: int = 1) -> None:
        del workers  # one stream entry a chunk: a worker takes as many at once as its pace asks for
        try:
            self.r.xgroup_create(self.k_tasks, GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self.r.hsetnx(self.k_meta, "chunks", chunks)
        # A resumed run may have been ended by a coordinator that gave up (--timeout): it is live again.
        self.r.hdel(self.k_meta, "ended")

    @translate
    def publish_tasks(self, tasks: Iterable[tuple[int, bytes]]) -> int:
        n = 0
        pipe = self.r.pipeline(transaction=False)
        for chunk_id, body in tasks:
            pipe.xadd(self.k_tasks, {"c": chunk_id, "m": body})
            n += 1
            if n % 1000 == 0:
                pipe.hincrby(self.k_meta, "published", 1000)
                pipe.execute()
        pipe.hincrby(self.k_meta, "published", n % 1000)
        pipe.execute()
        return n

    @translate
    def publish_plan(self, plan: ChunkPlan, ids: Iterable[range]) -> int:
        # The server builds the bodies (redis_lua.PUBLISH_PLAN): a block of chunks is one command, and the coordinator,
        # which every worker of a run shares, spends about 1 µs a chunk on publishing instead of about 14.
        if plan.params > 2**53:  # past what the script's numbers (Lua doubles) hold exactly
            return super().publish_plan(plan, ids)  # type: ignore[misc, no-any-return]
        frame = task_frame(self.run_id)
        head = [frame.head, frame.before_start, frame.before_stop, plan.chunk_size, plan.params]
        n = 0
        for batch in _round_trips(ids):
            replies = run_scripts(self.r, redis_lua.PUBLISH_PLAN, [self.k_tasks, self.k_meta], [[*head, first, last] for first, last in batch])
            n += sum(int(reply) for reply in replies)
        return n

    @translate
    def read_results(self, max_count: int, timeout_s: float) -> list[bytes]:
        pipe = self.r.pipeline(transaction=False)
        # Trim what the previous call returned, in the same round trip: the broker's memory stays flat.
        pipe.xtrim(self.k_results, minid=self._results_cursor, approximate=False)
        if timeout_s > 0:
            pipe.xread({self.k_results: self._results_cursor}, count=max_count, block=min(MAX_BLOCK_MS, max(1, int(timeout_s * 1000))))
        else:
            pipe.xread({self.k_results: self._results_cursor}, count=max_count)
        _, reply = pipe.execute()
        entries = stream_entries(reply)
        if not entries:
            return []
        self._results_cursor = entries[-1][0]
        return [fields[b"r"] for _, fields in entries]

    @translate
    def dead_letters(self) -> list[DeadLetter]:
        return self._letters(self.k_dead)

    @translate
    def rejections(self) -> list[DeadLetter]:
        return self._letters(self.k_rejected)

    def _letters(self, key: str) -> list[DeadLetter]:
        out = []
        for _, f in cast(list[Entry], self.r.xrange(key)):
            chunk, n = f.get(b"c", b""), f.get(b"n", b"0")
            reason = f.get(b"reason", b"").decode(errors="replace")
            out.append(DeadLetter(int(chunk) if chunk.isdigit() else None, reason, int(n) if n.isdigit() else 0, f.get(b"m", b"")))
        return out

    @translate
    def stats(self) -> BrokerStats:
        meta = {k.decode(): int(v) for k, v in cast(dict[bytes, bytes], self.r.hgetall(self.k_meta)).items()}
        try:
            groups = self.r.xinfo_groups(self.k_tasks)
        except redis.ResponseError:  # no tasks stream yet: nothing declared
            groups = []
        group = next((g for g in groups if g.get("name") == GROUP.encode()), {})
        inflight, consumers = int(group.get("pending", 0)), int(group.get("consumers", 0))
        if consumers and any(c["name"] == redis_lua.ORPHANS.encode() for c in self.r.xinfo_consumers(self.k_tasks, GROUP)):
            consumers -= 1  # the orphans' holder is no worker (it may stay in the group empty after a reclaim)
        completed, dead, published = meta.get("completed", 0), meta.get("dead", 0), meta.get("published", 0)
        return BrokerStats(
            published=published,
            completed=completed,
            queued=max(0, published - completed - dead - inflight),
            inflight=inflight,
            consumers=consumers,
            dead_lettered=dead,
            rejected=meta.get("rejected", 0),
            duplicates=meta.get("duplicates", 0),
        )

    @translate
    def release_exited(self, worker_key: str) -> int:
        return int(run_script(self.r, redis_lua.ORPHAN, [self.k_tasks], [GROUP, worker_key]))

    @translate
    def reopen(self, chunk_id: int, task: bytes) -> bool:
        return bool(run_script(self.r, redis_lua.REOPEN, self._keys, [chunk_id, task]))

    @translate
    def end_run(self) -> None:
        self.r.hset(self.k_meta, "ended", 1)

    @translate
    def delete_run(self) -> None:
        self.r.delete(*self._keys)  # the lease stays until release(): nobody may start this run id meanwhile


def _round_trips(ids: Iterable[range]) -> Iterator[list[tuple[int, int]]]:
    """The (first, last) ids of the PUBLISH_PLAN calls for ``ids``, grouped into round trips: at most PUBLISH_BLOCK
    chunks a call, and at most PIPELINE_BLOCKS calls or about PIPELINE_CHUNKS chunks a round trip."""
    batch: list[tuple[int, int]] = []
    chunks = 0
    for r in ids:
        for first in range(r.start, r.stop, PUBLISH_BLOCK):
            last = min(first + PUBLISH_BLOCK, r.stop) - 1
            if batch and (len(batch) == PIPELINE_BLOCKS or chunks + last - first + 1 > PIPELINE_CHUNKS):
                yield batch
                batch, chunks = [], 0
            batch.append((first, last))
            chunks += last - first + 1
    if batch:
        yield batch
