"""Redis Streams backend.

Tasks live in a stream read through one consumer group; a worker's result and
its XACK go through one Lua script, so they happen together. When the
coordinator's runtime sees a worker exit, it hands that worker's pending entries
to the orphans' consumer (:meth:`release_exited`), and every fetch of a live
worker adopts orphans first, in the same round trip. A worker that is alive but
cut off or hung keeps its entries until they are taken over with XAUTOCLAIM once idle for
``0.6 * reclaim_after_s``; workers look for such entries every
``0.3 * reclaim_after_s``, so a takeover happens within ``reclaim_after_s``. A
live worker refreshes the idle time of the entries it holds every
``0.2 * reclaim_after_s`` (heartbeat), so a slow chunk is never stolen.

Batching, so that fast chunks do not pay a round trip each: a worker fetches as
many tasks as fit in about ``BATCH_TARGET_S`` of its measured time per chunk
(1 for slow chunks, at most ``MAX_BATCH``), holds them locally (the heartbeat
covers them), and sends a batch's completions in the same round trip that
fetches the next batch (or after ``FLUSH_AFTER_S`` at the latest). A crash costs at most one batch of recomputation, never
a result: a completion not yet sent leaves its task pending, to be reclaimed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import redis

from ttg.broker import Broker, Delivery
from ttg.brokers.redis import lua as redis_lua
from ttg.brokers.redis.client import MAX_BLOCK_MS, connect, run_script, stream_entries, translate
from ttg.brokers.redis.coordinator import GROUP, CoordinatorSide
from ttg.config import redact_url

log = logging.getLogger(__name__)

BATCH_TARGET_S = 0.02
MAX_BATCH = 64
FLUSH_AFTER_S = 0.01  # a completed chunk's result reaches the broker within this, batch or not
ADOPT_EVERY_S = 0.1  # an idle worker looks at the orphans this often; a busy one at every fetch
_MAX_PENDING_BYTES = 1 << 20  # smaller flushes keep Redis responsive to the coordinator (one 3 MB script stalls it ~20 ms)


class RedisStreamsBroker(CoordinatorSide, Broker):
    """One connection's view of a run: the coordinator's calls (:class:`CoordinatorSide`) or a worker's (below)."""

    def __init__(
        self, url: str, run_id: str, *, consumer: str | None = None, max_deliveries: int = 3, reclaim_after_s: float = 3.0, prefetch: int = MAX_BATCH
    ) -> None:
        self.url = url
        self.run_id = run_id
        self.consumer = consumer or ""  # "" = the coordinator, which never takes tasks
        self.max_deliveries = max_deliveries
        self.min_idle_ms = max(1, int(reclaim_after_s * 600))
        self.reclaim_every_s = reclaim_after_s * 0.3
        self.heartbeat_every_s = reclaim_after_s * 0.2
        self.retry_delay_ms = min(1000, self.min_idle_ms // 2)
        base = f"ttg:{{{run_id}}}:"
        self.k_tasks, self.k_results, self.k_dead = base + "tasks", base + "results", base + "dead"
        self.k_done, self.k_rejected, self.k_meta = base + "done", base + "rejected", base + "meta"
        self.k_owner = base + "owner"  # the run's lease: which coordinator is live
        self._keys = [self.k_tasks, self.k_results, self.k_dead, self.k_done, self.k_rejected, self.k_meta]
        self.r = connect(url)
        self._results_cursor = b"0-0"
        # worker state
        self._registered = False
        self._ended = False  # the coordinator has ended the run: receive() hands out nothing more
        self._next_reclaim = 0.0
        self._buffer: deque[Delivery] = deque()  # fetched, not yet handed to the worker
        self._done: dict[bytes, tuple[int, bytes]] = {}  # completions not yet sent: entry -> (chunk id, result)
        self._done_since = 0.0
        self._done_bytes = 0  # the size of the results in _done, kept as they come (summing them per completion was O(batch²))
        self._batch = 1
        self.prefetch = prefetch  # the most chunks a worker fetches at once
        self._max_batch = prefetch
        self._chunk_s: float | None = None  # the worker's time per chunk, over its last completions
        self._completed_at: deque[float] = deque(maxlen=2 * MAX_BATCH + 1)
        # When each held task was handed to the worker: it keeps up to two in its compute child, so "since the
        # previous hand-out" would measure the pipeline, not the chunk.
        self._held: set[bytes] = set()  # every entry this worker owns: buffered, computing, or completed but unsent
        self._held_lock = threading.Lock()
        self._stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self._closed = False
        # coordinator state
        self._owner: str | None = None
        self._lease_stop = threading.Event()
        self._lease_thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"RedisStreamsBroker({redact_url(self.url)!r}, run_id={self.run_id!r}, consumer={self.consumer!r})"

    # -- worker side --------------------------------------------------------
    @translate
    def receive(self, timeout_s: float) -> Delivery | None:
        assert self.consumer, "receive() needs a consumer name"
        if self._ended:
            return None  # said once by the reclaim tick; a pipelined worker asks again before it checks drained()
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            if not self._registered and not self._register():
                time.sleep(min(0.2, max(0.0, deadline - now)))  # the producer has not declared the run yet
                if time.monotonic() >= deadline:
                    return None
                continue
            # Orphans first, on their own clock: a busy worker always has local work,
            # and a crashed peer's chunks must not wait for the queue to run dry.
            if now >= self._next_reclaim:
                self._next_reclaim = now + self.reclaim_every_s
                if self._reclaim_batch() == "ended":
                    self._ended = True
                    return None  # the coordinator ended the run: stop taking work (close() gives back the rest)
            if not self._buffer and timeout_s > 0:
                # Pending completions run before the read blocks, so one round trip does both.
                self._fetch(block_ms=max(1, min(MAX_BLOCK_MS, int((min(deadline, self._next_reclaim) - time.monotonic()) * 1000))))
            elif not self._buffer and self._done and time.monotonic() - self._done_since >= FLUSH_AFTER_S:
                # 0: what is at hand, and no waiting. Completions held past FLUSH_AFTER_S go now, with a look for the
                # next tasks in the same round trip (the worker may be about to wait for a slow batch).
                self._fetch(block_ms=0)
            if self._buffer:
                delivery = self._buffer.popleft()
                return delivery
            if time.monotonic() >= deadline:
                return None

    @translate
    def complete(self, delivery: Delivery | None, chunk_id: int, result: bytes) -> None:
        if delivery is None:  # static mode: nothing was queued, nothing to batch with
            run_script(self.r, redis_lua.COMPLETE, self._keys, [GROUP, self.consumer, b"", chunk_id, result])
            return
        if delivery.token in self._done:
            return  # the caller is retrying after a broker error: this completion is already queued
        # The worker's time per chunk is the interval between its completions, not a chunk's time from hand-out to
        # completion: a worker that keeps batches of chunks in its compute child holds each one for a whole batch, and
        # sizing by that made every fetch smaller, and each chunk wait longer, until fetches were one chunk each.
        self._completed_at.append(time.monotonic())
        if len(self._completed_at) > 1:
            self._chunk_s = (self._completed_at[-1] - self._completed_at[0]) / (len(self._completed_at) - 1)
            self._batch = max(1, min(self._max_batch, int(BATCH_TARGET_S / max(self._chunk_s, 1e-6))))
        if not self._done:
            self._done_since = time.monotonic()
        self._done[delivery.token] = (chunk_id, result)
        self._done_bytes += len(result)
        if not self._buffer:
            # Send the batch's completions and take the next batch in one round trip, so this
            # worker always holds its next task: there is no moment when a crash orphans nothing.
            self._fetch(block_ms=0)
        elif time.monotonic() - self._done_since >= FLUSH_AFTER_S or self._done_bytes >= _MAX_PENDING_BYTES:
            self._flush()  # results stay visible within FLUSH_AFTER_S, for progress and for faults

    @translate
    def fail(self, delivery: Delivery, reason: str, *, retry: bool) -> None:
        assert self.consumer, "fail() needs a consumer name"
        idle_ms = max(0, self.min_idle_ms - self.retry_delay_ms)
        args = [GROUP, self.consumer, delivery.token, reason[:2000], delivery.deliveries, self.max_deliveries, int(retry), idle_ms]
        run_script(self.r, redis_lua.FAIL, self._keys, args)
        with self._held_lock:
            self._held.discard(delivery.token)

    @translate
    def reject(self, delivery: Delivery, reason: str) -> None:
        assert self.consumer, "reject() needs a consumer name"
        run_script(self.r, redis_lua.REJECT, self._keys, [GROUP, delivery.token, reason[:2000]])
        with self._held_lock:
            self._held.discard(delivery.token)

    @translate
    def drained(self) -> bool:
        self._flush()
        return bool(self.r.hexists(self.k_meta, "ended"))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.release()
        self._stop.set()
        if self._hb_thread is not None:
            self._hb_thread.join(timeout=2)
        try:
            if self.consumer:
                self._flush()
                self._release_held()
        except redis.ResponseError as e:
            if "NOGROUP" not in str(e):  # NOGROUP: the run was deleted, nothing left to release
                log.warning("could not flush or release held chunks on close: %s", e)
        except redis.RedisError as e:  # unsent completions stay pending and are reclaimed: nothing is lost
            log.warning("could not flush or release held chunks on close: %s", e)
        finally:
            self.r.close()

    def _release_held(self) -> None:
        with self._held_lock:
            held = list(self._held)
        if held:
            # Chunks fetched but not finished go to the orphans, which the next worker to fetch adopts.
            run_script(self.r, redis_lua.RELEASE, [self.k_tasks], [GROUP, self.consumer, *held])
        elif not self.r.xpending_range(self.k_tasks, GROUP, "-", "+", 1, consumername=self.consumer):
            # Only a consumer that owns nothing may go: deleting one drops its pending entries.
            self.r.xgroup_delconsumer(self.k_tasks, GROUP, self.consumer)

    # -- batching -----------------------------------------------------------
    def _take(self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> Delivery:
        with self._held_lock:
            self._held.add(entry_id)
        if self._hb_thread is None:
            self._hb_thread = threading.Thread(target=self._heartbeat_loop, name="ttg-heartbeat", daemon=True)
            self._hb_thread.start()
        return Delivery(body=fields.get(b"m", b""), deliveries=deliveries, token=entry_id)

    def _fetch(self, block_ms: int) -> None:
        """Send pending completions, adopt orphans and read up to a batch of new tasks, in one round trip; then, only
        when that found nothing and ``block_ms`` allows, wait for new tasks (at most ``ADOPT_EVERY_S``, so an idle
        worker looks at the orphans again soon)."""
        pipe = self.r.pipeline(transaction=False)
        completions = self._queue_completions(pipe)
        pipe.evalsha(redis_lua.sha(redis_lua.ADOPT), len(self._keys), *self._keys, *self._adopt_args())
        pipe.xreadgroup(GROUP, self.consumer, {self.k_tasks: ">"}, count=self._batch)
        adopted, reply = self._execute(pipe, completions)[-2:]
        if isinstance(adopted, redis.exceptions.NoScriptError):  # the server restarted and lost its scripts
            adopted = run_script(self.r, redis_lua.ADOPT, self._keys, self._adopt_args())
        for entry_id, flat, n in adopted or []:
            log.info("chunk adopted", extra={"event": "reclaimed", "entry": entry_id.decode(), "deliveries": n})
            self._buffer.append(self._take(entry_id, dict(zip(flat[::2], flat[1::2], strict=True)), int(n)))
        self._take_new(reply)
        if not self._buffer and block_ms:
            self._take_new(self.r.xreadgroup(GROUP, self.consumer, {self.k_tasks: ">"}, count=self._batch, block=min(block_ms, int(ADOPT_EVERY_S * 1000))))

    def _take_new(self, reply: Any) -> None:
        """Buffer the new tasks an XREADGROUP reply handed this worker (first deliveries)."""
        self._buffer.extend(self._take(entry_id, fields, 1) for entry_id, fields in stream_entries(reply))

    def _adopt_args(self) -> list[Any]:
        return [GROUP, self.consumer, self.max_deliveries, self._batch]

    def _reclaim_batch(self) -> str:
        """Take over idle tasks of dead peers; returns "ended" when the run is over."""
        self._flush()
        got = run_script(self.r, redis_lua.RECLAIM, self._keys, [GROUP, self.consumer, self.min_idle_ms, self.max_deliveries, self._batch])
        if got == b"ended":
            return "ended"
        for entry_id, flat, n in reversed(got or []):
            log.info("chunk reclaimed", extra={"event": "reclaimed", "entry": entry_id.decode(), "deliveries": n})
            self._buffer.appendleft(self._take(entry_id, dict(zip(flat[::2], flat[1::2], strict=True)), int(n)))
        if got and len(got) >= self._batch:
            self._next_reclaim = time.monotonic()  # a dead peer may have held more: look again at once
        return "running"

    def _completion_args(self) -> list[Any]:
        return [GROUP, self.consumer, *(part for entry, (chunk_id, result) in self._done.items() for part in (entry, chunk_id, result))]

    def _queue_completions(self, pipe: Any) -> list[bytes]:
        """Queue the held completions as the pipeline's first command; returns their entries."""
        if not self._done:
            return []
        pipe.evalsha(redis_lua.sha(redis_lua.COMPLETE), len(self._keys), *self._keys, *self._completion_args())
        return list(self._done)

    def _execute(self, pipe: Any, completions: list[bytes]) -> list[Any]:
        """Run the pipeline; every reply comes back, a script the server does not know as its NoScriptError.

        A restarted server has lost its scripts. Its other replies still count (a lost XREADGROUP reply would leave
        tasks pending under this consumer until the reclaim bound), and the completions are sent again at once:
        they are idempotent, and a COMPLETE that met NOSCRIPT did not run."""
        replies: list[Any] = pipe.execute(raise_on_error=False)
        if completions and isinstance(replies[0], redis.exceptions.NoScriptError):
            replies[0] = run_script(self.r, redis_lua.COMPLETE, self._keys, self._completion_args())
        for reply in replies:
            if isinstance(reply, Exception) and not isinstance(reply, redis.exceptions.NoScriptError):
                raise reply
        self._done.clear()
        self._done_bytes = 0
        with self._held_lock:
            self._held.difference_update(completions)
        return replies

    def _flush(self) -> None:
        if self._done:
            pipe = self.r.pipeline(transaction=False)
            self._execute(pipe, self._queue_completions(pipe))

    # -- registration and heartbeat -----------------------------------------
    def _register(self) -> bool:
        """Join the group by name, so the coordinator can see this worker before any task exists."""
        try:
            self.r.xgroup_createconsumer(self.k_tasks, GROUP, self.consumer)
        except redis.ResponseError as e:
            if "NOGROUP" in str(e) or "no such key" in str(e).lower() or "requires the key to exist" in str(e):
                return False
            raise
        self._registered = True
        # Completions travel inside pipelines, where a missing script would cost the whole round trip.
        pipe = self.r.pipeline(transaction=False)
        for source in redis_lua.ALL:
            pipe.script_load(source)
        pipe.execute()
        # No worker may hold more than 1/16 of the plan: the tail stays balanced, and a fault
        # at a progress point still finds work in flight even in a small, fast sweep.
        chunks = int(self.r.hget(self.k_meta, "chunks") or 0)
        self._max_batch = max(1, min(self.prefetch, chunks // 16))
        log.info("joined consumer group", extra={"event": "connected", "max_batch": self._max_batch})
        return True

    def _heartbeat_loop(self) -> None:
        # Its own connection, so a beat never waits behind the worker's blocking XREADGROUP.
        client = connect(self.url)
        try:
            while not self._stop.wait(self.heartbeat_every_s):
                with self._held_lock:
                    held = list(self._held)
                if not held:
                    continue
                try:
                    run_script(client, redis_lua.HEARTBEAT, [self.k_tasks], [GROUP, self.consumer, *held])
                except redis.RedisError as e:  # keep beating: the next beat may get through
                    log.warning("heartbeat failed: %s", e)
        finally:
            client.close()
