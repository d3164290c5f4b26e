"""RabbitMQ backend: durable queues, manual acks, publisher confirms, a TTL retry queue and dead-letter queues.

Topology of run ``R`` (default exchange, declared idempotently by the coordinator):

* ``ttg.R.tasks``: quorum queue of task messages. Quorum, because its
  ``x-delivery-count`` header counts every return to the queue, a crashed
  consumer's included; a classic queue only says "redelivered".
* ``ttg.R.retry``: quorum queue with a message TTL whose expired messages are
  dead-lettered (at least once) back into ``tasks``: a chunk that raised is
  retried after a delay.
* ``ttg.R.results``, ``ttg.R.dead`` (chunks that used up their deliveries),
  ``ttg.R.rejected`` (unreadable messages) and ``ttg.R.control`` (holds a
  message once the run has ended): durable classic queues.

Every message is persistent and every publish is confirmed. A worker acks a
task only after the broker has confirmed the result, so a crash between the
two costs a duplicate (dropped by chunk id in the ledger), never a chunk. A
worker that dies or loses its connection leaves its unacked tasks to the
broker, which requeues them at once (crash) or after the heartbeat timeout
(partition).

Batching, so that 10,000 small chunks do not cost 10,000 round trips: the
producer packs the chunks it publishes into task messages (header
``x-ttg-batch``; how many: ``coordinator.chunks_per_message``); the adapter hands them to the worker one by
one and acks the message when all of its chunks are settled. A worker sends its
results in batches too (one confirmed message every ``FLUSH_AFTER_S`` or
``FLUSH_BYTES``), without waiting for the confirm. A batch that comes back
after a crash is split into single-chunk messages, so a chunk that kills its
worker each time is dead-lettered alone. A message without the batch header is
one task, as any producer may publish.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import pika
import pika.exceptions

from ttg.broker import Broker, Delivery
from ttg.brokers.rabbitmq import topology as topo
from ttg.brokers.rabbitmq.amqp_client import AmqpClient, QueueMissing
from ttg.brokers.rabbitmq.coordinator import CoordinatorSide
from ttg.brokers.rabbitmq.wire import BATCH, CHUNK, PRIOR, Token, await_confirms, pack_batch, read_task, wait_registered
from ttg.config import redact_url
from ttg.errors import BrokerError, BrokerUnavailable, MessageError, PublishRefused

log = logging.getLogger(__name__)

FLUSH_AFTER_S = 0.02  # a completed chunk's result is on its way within this
FLUSH_BYTES = 4 << 20
DEFAULT_PREFETCH = 2  # task messages a worker holds at first: one being computed, one ready
MAX_PREFETCH = 16
WINDOW_TARGET_S = 0.05  # work a worker holds once it knows its speed: enough to cover a confirm's round trip
# A task message whose chunks not yet started would keep its worker longer than this gives them back (see receive()).
HOLD_LIMIT_S = 30.0


class RabbitMQBroker(CoordinatorSide, Broker):
    """One connection's view of a run: the coordinator's calls (:class:`CoordinatorSide`) or a worker's (below)."""

    def __init__(
        self,
        url: str,
        run_id: str,
        *,
        consumer: str | None = None,
        max_deliveries: int = 3,
        reclaim_after_s: float = 3.0,
        prefetch: int | None = None,
        hold_limit_s: float = HOLD_LIMIT_S,
    ) -> None:
        self.url = url
        self.run_id = run_id
        self.consumer = consumer or ""
        self.max_deliveries = max_deliveries
        # A prefetch the user chose is kept; otherwise it starts at 2 and, for fast chunks, widens once (up to 16),
        # so fast workers never wait on an ack and slow ones never hoard work the others could do.
        self.prefetch = prefetch or DEFAULT_PREFETCH
        self.adaptive = prefetch is None
        self._chunk_s: float | None = None  # moving average of the worker's time per chunk
        self.hold_limit_s = hold_limit_s
        self._handed_out_at: dict[Token, float] = {}  # per delivery: a worker keeps two chunks in its compute child
        self._per_message = 1  # chunks in the latest task message
        self._largest_message = 1  # chunks in the largest task message received
        self._widened = False
        self.q = topo.QueueNames(run_id)
        self.retry_delay_ms = max(10, min(1000, int(reclaim_after_s * 300)))
        # A peer is declared dead after missing heartbeats for about this long; pika takes whole seconds.
        self.heartbeat_s = max(1, round(reclaim_after_s))
        self._client: AmqpClient | None = None
        self._control: topo.Control | None = None
        self._closed = False
        # coordinator state
        self._workers = 1  # how many workers share what the coordinator publishes (declare sets it)
        self._publishing: int | None = None
        self._published = 0
        self._results_seen = 0
        self._results: queue.Queue[tuple[int, int, bytes]] = queue.Queue()
        self._results_consuming = False
        self._unacked: dict[int, list[int]] = {}  # result deliveries returned by the last read_results, acked by the next
        # worker state
        self._inbox: queue.Queue[list[Delivery]] = queue.Queue()  # a task message's chunks, put by the I/O thread
        self._current: deque[Delivery] = deque()  # the chunks of the message being handed out (main thread only)
        self._consuming = False
        self._lock = threading.Lock()
        self._open: dict[tuple[int, int], int] = {}  # (generation, tag) -> chunks of that message not yet settled
        self._pending: list[tuple[Token, bytes]] = []  # completed, not yet sent
        self._pending_bytes = 0
        self._pending_since = 0.0
        self._in_flight: set[Future[None]] = set()
        self._ended = False
        self._end_check: Future[tuple[int, int]] | None = None
        self._next_end_check = 0.0
        self.end_check_every_s = reclaim_after_s * 0.3

    def __repr__(self) -> str:
        return f"RabbitMQBroker({redact_url(self.url)!r}, run_id={self.run_id!r}, consumer={self.consumer!r})"

    # -- worker side --------------------------------------------------------
    def receive(self, timeout_s: float) -> Delivery | None:
        assert self.consumer, "receive() needs a consumer name"
        deadline = time.monotonic() + timeout_s
        if not self._consuming:
            try:
                wait_registered(self.client.consume(self.q.tasks, self.prefetch, self._on_task), self.q.tasks)
            except QueueMissing:
                time.sleep(min(0.2, timeout_s))  # the producer has not declared the run yet
                return None
            self._consuming = True
        while True:
            if self._run_ended():
                return None  # stop taking work; close() returns what is held to the queue
            self._hand_back_waiting()
            if not self._current:
                try:
                    self._current.extend(self._inbox.get_nowait())
                except queue.Empty:
                    # Nothing in hand: send what is done, so its acks free the prefetch window.
                    self._flush()
                    try:
                        self._current.extend(self._inbox.get(timeout=max(0.0, deadline - time.monotonic())))
                    except queue.Empty:
                        return None
            delivery = self._current.popleft()
            if not self._held(delivery.token):
                continue  # its message is back in the queue (a lost connection, or given back whole): computing it would duplicate
            if self._current and self._holds_too_long(len(self._current)):
                # Slow chunks in a message packed for fast ones: give back the ones not started, so that no worker
                # holds more work than the others could share at the end of the sweep, and no message stays
                # unacknowledged past RabbitMQ's consumer_timeout (30 min by default), which would close the channel.
                self._hand_back(list(self._current))
                self._current.clear()
                delivery = dataclasses.replace(delivery, token=dataclasses.replace(delivery.token, last=True))  # its results go at once
            self._handed_out_at[delivery.token] = time.monotonic()
            return delivery

    def _held(self, token: Token) -> bool:
        """Whether the task message ``token`` came in is still this worker's: not requeued by a lost connection or
        given back whole."""
        assert self._client is not None
        return token.generation == self._client.generation and (token.generation, token.tag) in self._open

    def _holds_too_long(self, chunks: int) -> bool:
        """Whether ``chunks`` not started, at this worker's time per chunk, would keep their message past the hold limit."""
        return self._chunk_s is not None and chunks * self._chunk_s > self.hold_limit_s

    def _hand_back_waiting(self) -> None:
        """Hand back the task messages waiting behind the one in hand whose chunks, now known to be slow, would keep
        them unacknowledged past the hold limit. None of their chunks has started, so all go back; a message waits
        here at most a chunk's time once the worker knows its speed, as a single chunk's message would."""
        if self._chunk_s is None or self._inbox.empty() or not self._holds_too_long(self._largest_message):
            return
        kept: list[list[Delivery]] = []
        for waiting in self._take_inbox():
            if len(waiting) > 1 and self._holds_too_long(len(waiting)):  # one chunk given back would only come back
                if live := [d for d in waiting if self._held(d.token)]:
                    self._hand_back(live)
            else:
                kept.append(waiting)
        for waiting in kept:  # a message the I/O thread put meanwhile may now come first: order is no promise
            self._inbox.put(waiting)

    def _hand_back_held(self) -> None:
        """On close (a SIGTERM's drain, a pod's deletion): hand back the chunks not started, and ack the messages they
        came in once their started chunks' results are confirmed. Left to the connection's close, each message would
        come back whole, its finished chunks to be redone.

        Each chunk handed back here counts one delivery, as the connection's close would have counted it, and as Redis
        counts a stopped worker's chunks that another adopts: the delivery count is also what tells the run's fault
        record that a chunk came back after its worker stopped (its recovery time)."""
        held = [list(self._current), *self._take_inbox()]
        self._current.clear()
        for message in held:
            if live := [d for d in message if self._held(d.token)]:
                self._hand_back(live, spent=True)

    def _take_inbox(self) -> list[list[Delivery]]:
        """Every task message waiting in the inbox, taken out of it."""
        taken: list[list[Delivery]] = []
        with contextlib.suppress(queue.Empty):
            while True:
                taken.append(self._inbox.get_nowait())
        return taken

    def _run_ended(self) -> bool:
        """Whether the coordinator ended the run, looked up without blocking every ``end_check_every_s``.

        A busy worker always has prefetched work, so it must look for the end on its own clock.
        """
        now = time.monotonic()
        if self._end_check is not None and self._end_check.done():
            with contextlib.suppress(BrokerError):  # not declared yet, or a reconnect: look again next time
                self._ended = self._end_from(self._end_check, timeout_s=0)
            self._end_check = None
        if not self._ended and self._end_check is None and now >= self._next_end_check:
            self._next_end_check = now + self.end_check_every_s
            self._end_check = self.client.counts(self.q.control)
        return self._ended

    def _on_task(self, generation: int, tag: int, props: pika.BasicProperties, body: bytes) -> None:
        """Runs on the I/O thread: unpack a task message into deliveries, or split, dead-letter or reject it.

        Nothing here may raise: an exception on pika's I/O thread drops the connection, the message comes back
        with its delivery count raised, and an innocent chunk ends dead-lettered. Headers are anyone's input
        (whoever can publish to the queue), so each is read defensively and a bad one rejects that one message.
        """
        try:
            deliveries, items = read_task(props, body)
        except Exception as e:  # MessageError for what the checks catch; anything else is a reader bug, also one message's
            reason = f"rejected: {e}" if isinstance(e, MessageError) else f"rejected: unreadable task message ({type(e).__name__}: {e})"
            log.warning("message rejected: %s", reason, extra={"event": "rejected"})
            self._settle_after(generation, tag, [(self.q.rejected, body, {"x-ttg-reason": reason[:2000]})])
            return
        if deliveries > self.max_deliveries:
            reason = f"delivered {deliveries - 1} times without completing (its worker crashed or lost its connection each time)"
            self._settle_after(generation, tag, [(self.q.dead, b, {CHUNK: c, "x-ttg-reason": reason, PRIOR: deliveries - 1}) for c, b in items])
            return
        if len(items) > 1 and deliveries > 1:
            # Split a returned batch, so a chunk that crashes its worker goes to the dead-letter queue alone.
            self._settle_after(generation, tag, [(self.q.tasks, b, {CHUNK: c, PRIOR: deliveries - 1}) for c, b in items])
            return
        with self._lock:
            self._open[(generation, tag)] = len(items)
        self._per_message = len(items)
        self._largest_message = max(self._largest_message, len(items))
        self._inbox.put([Delivery(part, deliveries, Token(generation, tag, chunk, i == len(items) - 1)) for i, (chunk, part) in enumerate(items)])

    def _settle_after(self, generation: int, tag: int, messages: list[tuple[str, bytes, dict[str, Any]]]) -> None:
        """Publish replacement messages, and ack the original once all are confirmed (I/O thread)."""
        assert self._client is not None
        client = self._client
        futures = [f for q, body, headers in messages for f in client.publish(q, [(body, headers)])]
        # Refused, not acked: the original must come back and be handled again. A lost connection returns it by itself;
        # a refused publish (basic.nack: a full queue, a resource alarm) leaves the connection up, and the original
        # would sit unacknowledged, a chunk nobody finishes, until the connection closed.
        self._when_confirmed(futures, lambda: client.ack(generation, [tag]), lambda: client.requeue(generation, tag))

    def _when_confirmed(self, futures: list[Future[None]], confirmed: Callable[[], None], refused: Callable[[], None]) -> None:
        """Call ``confirmed`` once every publish of ``futures`` is confirmed, or ``refused`` once when any fails (on
        pika's I/O thread, or at once). Until their callbacks have run the publishes count as in flight: close() waits
        for them, so the acks these queue go out before the connection's shutdown."""
        if not futures:
            confirmed()
            return
        remaining = [len(futures)]

        def settled(f: Future[None]) -> None:
            try:
                then: Callable[[], None] | None
                with self._lock:  # a future done already runs this on the caller's thread, beside the I/O thread's
                    if remaining[0] <= 0:
                        return  # one of them failed before: handled once
                    if f.exception() is not None:
                        remaining[0], then = -1, refused
                    else:
                        remaining[0] -= 1
                        then = confirmed if remaining[0] == 0 else None
                if then is not None:
                    then()
            finally:
                self._in_flight.discard(f)

        for f in futures:
            self._in_flight.add(f)
            f.add_done_callback(settled)

    def complete(self, delivery: Delivery | None, chunk_id: int, result: bytes) -> None:
        token = delivery.token if delivery is not None else Token(-1, 0, chunk_id, last=False)
        if delivery is not None:
            # From handing out to completion: with two chunks in the compute child, up to twice a chunk's own time.
            took_s = time.monotonic() - self._handed_out_at.pop(token, time.monotonic())
            self._chunk_s = took_s if self._chunk_s is None else 0.8 * self._chunk_s + 0.2 * took_s
            if self.adaptive:
                self._adapt_prefetch(self._chunk_s)
        with self._lock:  # the I/O thread puts back results whose publish failed
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.append((token, result))
            self._pending_bytes += len(result)
        # A task message's results go as soon as its last chunk is done: the ack that follows the confirm
        # frees the prefetch window while the worker computes the next message, so it never waits for it.
        if token.last or self._pending_bytes >= FLUSH_BYTES or time.monotonic() - self._pending_since >= FLUSH_AFTER_S:
            self._flush()

    def _adapt_prefetch(self, chunk_s: float) -> None:
        if self._widened:
            return
        per_message_s = max(chunk_s * self._per_message, 1e-6)
        want = min(MAX_PREFETCH, math.ceil(WINDOW_TARGET_S / per_message_s) + 1)
        if want > self.prefetch + 1:
            # A consumer's prefetch is fixed when it subscribes (quorum queues have no channel-wide QoS), and
            # cancelling one makes pika reject what is in flight to it, which would count as deliveries.
            # So widen by subscribing a second consumer for the difference, once.
            log.debug("prefetch widened", extra={"prefetch": want, "message_s": round(per_message_s, 6)})
            self.client.consume(self.q.tasks, want - self.prefetch, self._on_task)
            self.prefetch, self._widened = want, True

    def fail(self, delivery: Delivery, reason: str, *, retry: bool) -> None:
        token: Token = delivery.token
        headers: dict[str, Any] = {PRIOR: delivery.deliveries, "x-ttg-reason": reason[:2000]}
        if token.chunk_id is not None:
            headers[CHUNK] = token.chunk_id
        if not retry and token.chunk_id is None:
            target = self.q.rejected  # unreadable: not a chunk the plan counts
        elif not retry or delivery.deliveries >= self.max_deliveries:
            target = self.q.dead
        else:
            target = self.q.retry
        self._move(delivery, target, headers, f"a {target.rsplit('.', 1)[-1]} message")

    def reject(self, delivery: Delivery, reason: str) -> None:
        # No chunk header: whatever chunk this message claims, it is not counted as that chunk's death.
        headers: dict[str, Any] = {PRIOR: delivery.deliveries, "x-ttg-reason": reason[:2000]}
        self._move(delivery, self.q.rejected, headers, "a rejected message")

    def _move(self, delivery: Delivery, queue: str, headers: dict[str, Any], what: str) -> None:
        """Publish ``delivery`` to ``queue``, then settle it. If the broker refuses the publish (basic.nack: a full
        queue, say, by an operator's or an attacker's policy), give the task message back instead, and carry on:
        it comes again later, never lost, and the worker never dies of it."""
        try:
            await_confirms(self.client.publish(queue, [(delivery.body, headers)]), what)
        except PublishRefused as e:
            log.warning("RabbitMQ refused %s for %s (%s): its task message goes back", what, queue, e, extra={"event": "refused"})
            self._give_back(delivery.token)
            return
        self._settle([delivery.token])

    def _hand_back(self, rest: list[Delivery], *, spent: bool = False) -> None:
        """Publish ``rest``, the chunks of a task message not started, to the task queue one a message, and count them
        settled once all are confirmed; the original is acked when its started chunks are settled too. Their delivery
        counts stay as they are (a worker giving back slow chunks is no failed delivery), or, ``spent``, count this
        delivery. A refused publish gives the whole message back instead: its chunks come again, some twice (a
        duplicate, dropped by the ledger), none lost."""
        log.debug("giving back %d chunk(s) of a task message", len(rest), extra={"event": "handed_back", "closing": spent})
        tokens = [d.token for d in rest]
        futures = self.client.publish(self.q.tasks, [(d.body, {CHUNK: d.token.chunk_id, PRIOR: d.deliveries - (0 if spent else 1)}) for d in rest])
        self._when_confirmed(futures, lambda: self._settle(tokens), lambda: self._give_back(tokens[0]))

    def _give_back(self, token: Token) -> None:
        """Requeue the task message ``token`` came in, whole: its other chunks, settled or not, come again too."""
        with self._lock:
            self._handed_out_at.pop(token, None)
            if self._open.pop((token.generation, token.tag), None) is None:
                return  # static mode, or a message of a lost connection (the broker requeued it)
        if self._client is not None:
            self._client.requeue(token.generation, token.tag)

    def _flush(self) -> None:
        with self._lock:
            if not self._pending:
                return
            pending, self._pending, self._pending_bytes = self._pending, [], 0
        body = pack_batch([r for _, r in pending])
        tokens = [t for t, _ in pending]

        def refused() -> None:  # the results are still good: send them again with the next batch
            with self._lock:
                self._pending.extend(pending)
                self._pending_bytes += sum(len(r) for _, r in pending)

        self._when_confirmed(self.client.publish(self.q.results, [(body, {BATCH: len(pending)})]), lambda: self._settle(tokens), refused)

    def _settle(self, tokens: list[Token]) -> None:
        """Count chunks off their task messages; ack each message whose chunks are all settled."""
        done: dict[int, list[int]] = {}
        with self._lock:
            for t in tokens:
                self._handed_out_at.pop(t, None)
                key = (t.generation, t.tag)
                if key not in self._open:
                    continue  # static mode, or a message of a lost connection
                self._open[key] -= 1
                if self._open[key] == 0:
                    del self._open[key]
                    done.setdefault(t.generation, []).append(t.tag)
        for generation, tags in done.items():
            if self._client is not None:
                self._client.ack(generation, tags)

    def drained(self) -> bool:
        self._flush()
        if not self._ended:
            try:
                self._ended = self._end_from(self.client.counts(self.q.control), timeout_s=10.0)
            except QueueMissing:
                return False  # not declared yet (a worker may start before its coordinator)
        return self._ended

    @staticmethod
    def _end_from(count: Future[tuple[int, int]], timeout_s: float) -> bool:
        """The coordinator ends a run by putting a message in its control queue."""
        try:
            return count.result(timeout=timeout_s)[0] > 0
        except FutureTimeout:
            raise BrokerUnavailable(f"RabbitMQ did not answer a queue declare within {timeout_s:g}s") from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.consumer and self._client is not None:
                if not self._ended and self._consuming:
                    # No more deliveries first: every ack below frees prefetch, which the broker would refill.
                    try:
                        self._client.stop_consuming().result(timeout=2.0)
                    except FutureTimeout:
                        log.warning("RabbitMQ did not confirm the consumers' cancel within 2 s: what it delivers meanwhile comes again")
                    self._hand_back_held()
                self._flush()
                deadline = time.monotonic() + 5.0
                while self._in_flight and time.monotonic() < deadline:
                    time.sleep(0.01)
                if self._pending:  # unconfirmed: their tasks stay unacked, so they are redelivered, never lost
                    log.warning("closing with %d result(s) unconfirmed; their chunks will be redelivered", len(self._pending))
        except BrokerError as e:
            log.warning("could not send held results on close: %s", e)
        finally:
            # Closing the connection returns every unacked task message to the queue at once.
            if self._client is not None:
                self._client.close()
            if self._control is not None:
                self.release()
                self._control.close()
