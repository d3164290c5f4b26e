"""The coordinator's half of the RabbitMQ broker: the run's lease and topology, publishing the plan, reading results,
dead letters and counts, ending and deleting the run. A mixin of :class:`~ttg.brokers.rabbitmq.broker.RabbitMQBroker`,
which holds the state both halves share (the connection, the queue names) and the worker's half.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterable
from typing import Any

import pika

from ttg.broker import BrokerStats, DeadLetter
from ttg.brokers.rabbitmq import topology as topo
from ttg.brokers.rabbitmq.amqp_client import AmqpClient
from ttg.brokers.rabbitmq.wire import BATCH, CHUNK, await_confirms, pack_batch, unpack_batch, wait_registered
from ttg.errors import BrokerError, RunConflict
from ttg.plan import ChunkPlan

log = logging.getLogger(__name__)

MAX_TASKS_PER_MESSAGE = 128
MESSAGES_PER_WORKER = 32  # at least this many task messages for each worker, where the plan has the chunks for it
RESULTS_PREFETCH = 128  # result messages the coordinator holds unacked; it takes at most half per read (see read_results)


def chunks_per_message(chunks: int, workers: int) -> int:
    """How many chunks go into one task message when ``chunks`` are published at once for ``workers`` workers.

    A message costs about a millisecond of CPU whatever it carries: its task's enqueue, delivery and settlement in the
    quorum queue, its results' publish, confirm and delivery, and pika's frames and thread wake-ups at both ends. At
    chunk 1,000 of a 60M sweep, 1,875 messages took 0.63 s more of the broker's CPU than 469 did, 0.55 s more of the
    workers' and 0.28 s more of the coordinator's: a cheap chunk's own cost is a tenth of that. So cheap chunks go many
    to a message, up to ``MAX_TASKS_PER_MESSAGE``.

    A message is also what a worker holds and finishes alone. Each worker gets ``MESSAGES_PER_WORKER`` of them or more,
    so every worker starts with work, and what a worker holds at the end (while the others may have none left), two
    messages at the default prefetch, is at most a 16th of its share of the sweep. Packed before anyone knows how long
    a chunk takes, messages of chunks that prove slow are given back in part by their worker (``RabbitMQBroker.receive``,
    past ``HOLD_LIMIT_S``)."""
    return max(1, min(MAX_TASKS_PER_MESSAGE, chunks // (MESSAGES_PER_WORKER * max(1, workers))))


class CoordinatorSide:
    """The coordinator's calls of a RabbitMQBroker, and the connections both halves open lazily."""

    # Set by RabbitMQBroker.__init__.
    url: str
    run_id: str
    consumer: str
    heartbeat_s: int
    retry_delay_ms: int
    q: topo.QueueNames
    _client: AmqpClient | None
    _control: topo.Control | None
    _workers: int
    _publishing: int | None  # chunks the publish_plan under way publishes
    _published: int
    _results_seen: int
    _results: queue.Queue[tuple[int, int, bytes]]
    _results_consuming: bool
    _unacked: dict[int, list[int]]  # result deliveries returned by the last read_results, acked by the next

    @property
    def client(self) -> AmqpClient:
        if self._client is None:
            self._client = AmqpClient(self.url, name=f"ttg-{self.run_id}-{self.consumer or 'coordinator'}", heartbeat_s=self.heartbeat_s)
        self._client.wait_ready(timeout_s=10.0)
        return self._client

    @property
    def control(self) -> topo.Control:
        if self._control is None:
            self._control = topo.Control(self.url, self.q)
        return self._control

    # -- the run's lease ----------------------------------------------------
    def claim(self, owner: str, *, wait_s: float = 0.0) -> None:
        # RabbitMQ drops a dead coordinator's connection, and its exclusive owner queue with it, by itself:
        # a SIGKILLed holder's lease is gone at once (its socket closes); a cut-off one's after the heartbeat timeout.
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.control.claim()
                return
            except RunConflict:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def release(self) -> None:
        if self._control is not None and self._control.owns_lease:
            try:
                self._control.release()
            except BrokerError as e:  # the queue goes with the connection anyway
                log.warning("could not release the run's lease: %s", e)

    def has_state(self) -> bool:
        return self.control.exists()

    # -- coordinator side ---------------------------------------------------
    def declare(self, chunks: int, *, workers: int = 1) -> None:
        self._workers = workers
        self.control.declare(retry_delay_ms=self.retry_delay_ms)

    def publish_tasks(self, tasks: Iterable[tuple[int, bytes]]) -> int:
        # Sized by what is published, not by the plan: a resumed run that republishes 200 scattered chunks of a
        # 10,000-chunk plan must still give each worker its share of messages. publish_plan knows the count from its
        # runs of ids; anyone else's tasks are counted here.
        if self._publishing is None:
            tasks = list(tasks)
            total = len(tasks)
        else:
            total = self._publishing
        per_message = chunks_per_message(total, self._workers)
        messages: list[tuple[bytes, dict[str, Any]]] = []
        batch: list[tuple[int, bytes]] = []
        n = 0
        for task in tasks:
            batch.append(task)
            n += 1
            if len(batch) == per_message:
                messages.append(self._task_message(batch))
                batch = []
        if batch:
            messages.append(self._task_message(batch))
        # All in flight at once; one fsync on the broker confirms many.
        await_confirms(self.client.publish(self.q.tasks, messages), f"{len(messages)} task message(s)")
        self._published += n
        return n

    def publish_plan(self, plan: ChunkPlan, ids: Iterable[range]) -> int:
        runs = list(ids)
        self._publishing = sum(len(r) for r in runs)  # so publish_tasks need not hold every task to count them
        try:
            return super().publish_plan(plan, runs)  # type: ignore[misc, no-any-return]
        finally:
            self._publishing = None

    @staticmethod
    def _task_message(batch: list[tuple[int, bytes]]) -> tuple[bytes, dict[str, Any]]:
        if len(batch) == 1:
            return batch[0][1], {CHUNK: batch[0][0]}
        return pack_batch([body for _, body in batch]), {BATCH: [chunk for chunk, _ in batch]}

    def read_results(self, max_count: int, timeout_s: float) -> list[bytes]:
        if not self._results_consuming:
            wait_registered(self.client.consume(self.q.results, RESULTS_PREFETCH, self._on_result), self.q.results)
            self._results_consuming = True
        # Ack what the previous call returned only now: the caller has recorded it, so a coordinator that dies
        # between reading and recording leaves those results in the queue for the next one (``ttg run --resume``).
        for generation, tags in self._unacked.items():
            self.client.ack(generation, tags)
        self._unacked = {}
        out: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        taken = 0
        # A batch message is returned whole, so out may exceed max_count by one batch. At most half the prefetch per call:
        # the rest stays unacked credit, so the broker keeps sending while the caller records this batch.
        while len(out) < max_count and taken < RESULTS_PREFETCH // 2:
            try:
                generation, tag, body = self._results.get(timeout=max(0.0, deadline - time.monotonic()) if not out else 0)
            except queue.Empty:
                break
            parts = unpack_batch(body)
            out.extend(parts if parts is not None else [body])  # not a batch: one result, judged by the ledger
            self._unacked.setdefault(generation, []).append(tag)
            taken += 1
        self._results_seen += len(out)
        return out

    def _on_result(self, generation: int, tag: int, _props: pika.BasicProperties, body: bytes) -> None:
        self._results.put((generation, tag, body))

    def dead_letters(self) -> list[DeadLetter]:
        return self.control.dead_letters()

    def rejections(self) -> list[DeadLetter]:
        return self.control.dead_letters(self.q.rejected)

    def stats(self) -> BrokerStats:
        c = self.control.counts([self.q.tasks, self.q.retry, self.q.dead, self.q.rejected])
        dead, rejected = c[self.q.dead][0], c[self.q.rejected][0]
        waiting = c[self.q.tasks][0] + c[self.q.retry][0]
        return BrokerStats(
            published=self._published,
            completed=self._results_seen,
            queued=waiting,
            inflight=max(0, self._published - self._results_seen - dead - waiting),
            consumers=c[self.q.tasks][1],
            dead_lettered=dead,
            rejected=rejected,
            duplicates=0,  # RabbitMQ keeps no per-chunk state: the ledger drops and counts duplicates
        )

    def end_run(self) -> None:
        self.control.end()

    def delete_run(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self.control.delete()
