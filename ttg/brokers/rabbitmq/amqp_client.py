"""One AMQP connection, owned by its own I/O thread, with asynchronous publisher confirms.

Why a thread: pika is not thread-safe and sends heartbeats only while its I/O
loop runs. A worker computing a 10-minute chunk must still answer heartbeats,
or the broker would drop it and redeliver a healthy chunk. Why asynchronous
confirms: waiting for each confirm (an fsync on the broker) would cost a round
trip per message; here many publishes are in flight and each resolves a Future.

Every method is safe to call from any thread. Work is handed to the I/O thread
with ``add_callback_threadsafe``; callbacks given to :meth:`consume` and Future
callbacks run on the I/O thread and must not block.

A lost connection is re-opened with backoff (0.1 s doubling to 2 s) until
:meth:`close`. Each connection has a ``generation``: a delivery tag belongs to
one generation, and an ack for an older one is dropped (the broker has already
requeued that message). Publishes that were not confirmed fail with
:class:`BrokerUnavailable`; consumers are re-registered on the new connection.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pika
import pika.channel
import pika.exceptions
import pika.frame
from pika.adapters.select_connection import IOLoop
from pika.adapters.utils import io_services_utils

from ttg.config import redact_url
from ttg.errors import BrokerError, BrokerUnavailable, ConfigError, PublishRefused

log = logging.getLogger(__name__)

# pika reads 4 KB per recv() and appends each read to an immutable bytes buffer, so a 128 KB frame
# costs ~2 MB of copying; a 10M sweep's 80 MB of results cost over a gigabyte. Reading whole frames
# at once removes that (measured: coordinator CPU per 10M sweep down by about a third).
if getattr(io_services_utils._AsyncTransportBase, "_MAX_RECV_BYTES", 0) < 1 << 18:
    io_services_utils._AsyncTransportBase._MAX_RECV_BYTES = 1 << 18

OnMessage = Callable[[int, int, pika.BasicProperties, bytes], None]  # generation, delivery tag, properties, body
PERSISTENT = 2
REQUEUE_AFTER_S = 1.0  # a delivery whose replacement the broker refused goes back to its queue after this


@dataclass
class _Consumer:
    queue: str
    prefetch: int
    on_message: OnMessage
    registered: Future[None]
    arguments: dict[str, Any] | None = None
    tag: str | None = None  # on the current channel


class QueueMissing(BrokerError):
    """The queue does not exist (yet): the run was not declared, or was deleted."""


def check_url(url: str) -> None:
    """ConfigError when pika cannot read ``url`` (a bad port or query option would otherwise fail at connect time)."""
    try:
        pika.URLParameters(url)
    except ValueError as e:
        raise ConfigError(f"--broker-url {redact_url(url)}: {e}; see amqp://USER:PASS@HOST:PORT/VHOST in the README") from None


class AmqpClient:
    def __init__(self, url: str, *, name: str, heartbeat_s: int) -> None:
        self.url = url
        self.params = pika.URLParameters(url)
        self.params.heartbeat = heartbeat_s
        self.params.connection_attempts = 1
        self.params.socket_timeout = 5
        self.params.blocked_connection_timeout = 60
        self.params.client_properties = {"connection_name": name}
        self.generation = 0
        self.last_error = "not connected yet"
        self.ready = threading.Event()
        self._ioloop = IOLoop()
        self._conn: pika.SelectConnection | None = None
        self._ch: pika.channel.Channel | None = None  # confirm-mode data channel
        self._side: pika.channel.Channel | None = None  # passive declares, which close their channel on a missing queue
        self._side_waiting: list[tuple[str, Future[tuple[int, int]]]] = []
        self._seq = 0
        self._unconfirmed: dict[int, Future[None]] = {}
        self._consumers: list[_Consumer] = []
        self._backoff = 0.1
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"ttg-amqp-{name}", daemon=True)
        self._thread.start()
        self._ioloop.add_callback_threadsafe(self._connect)

    def __repr__(self) -> str:
        return f"AmqpClient({redact_url(self.url)!r}, generation={self.generation})"

    # -- API (any thread) -----------------------------------------------------
    def wait_ready(self, timeout_s: float) -> None:
        if not self.ready.wait(timeout_s):
            raise BrokerUnavailable(
                f"RabbitMQ unreachable at {redact_url(self.url)} ({self.last_error}); check the broker URL and that rabbitmq-server is running"
            )

    def publish(self, queue: str, messages: list[tuple[bytes, dict[str, Any]]]) -> list[Future[None]]:
        """Publish persistent messages to ``queue`` (default exchange); each Future resolves on the broker's confirm."""
        futures: list[Future[None]] = [Future() for _ in messages]
        self._call(lambda: self._publish(queue, messages, futures))
        return futures

    def ack(self, generation: int, tags: list[int]) -> None:
        self._call(lambda: self._ack(generation, tags))

    def requeue(self, generation: int, tag: int, after_s: float = REQUEUE_AFTER_S) -> None:
        """Give one delivery back to its queue (basic.reject, requeue) ``after_s`` from now: it comes again, its delivery
        count raised. The pause keeps a broker that refuses every publish from turning it into a busy loop."""
        self._call(lambda: self._ioloop.call_later(after_s, lambda: self._requeue(generation, tag)))

    def consume(self, queue: str, prefetch: int, on_message: OnMessage, arguments: dict[str, Any] | None = None) -> Future[None]:
        """Start consuming ``queue`` (now and after every reconnect); the Future fails with QueueMissing if it does not exist."""
        consumer = _Consumer(queue, prefetch, on_message, Future(), arguments)
        self._call(lambda: self._add_consumer(consumer))
        return consumer.registered

    def stop_consuming(self) -> Future[None]:
        """Cancel every consumer, now and for good (no reconnect registers them again); resolves once the broker has
        said cancel-ok for each: it sends those consumers nothing after that."""
        done: Future[None] = Future()
        self._call(lambda: self._stop_consuming(done))
        return done

    def counts(self, queue: str) -> Future[tuple[int, int]]:
        """(ready messages, consumers) of ``queue``, by a passive declare."""
        fut: Future[tuple[int, int]] = Future()
        self._call(lambda: self._counts(queue, fut))
        return fut

    def close(self, timeout_s: float = 5.0) -> None:
        if self._closing:
            return
        self._closing = True
        self._call(self._shutdown)
        self._thread.join(timeout_s)

    # -- I/O thread -------------------------------------------------------------
    def _call(self, fn: Callable[[], None]) -> None:
        try:
            self._ioloop.add_callback_threadsafe(fn)
        except Exception as e:  # the loop is gone (closed): nothing can be sent any more
            raise BrokerUnavailable(f"AMQP client for {redact_url(self.url)} is closed: {e}") from None

    def _run(self) -> None:
        try:
            self._ioloop.start()
        except Exception as e:
            if self._closing and isinstance(e, AssertionError):
                # close() during the AMQP handshake: pika aborts the socket, then its connection workflow asserts that
                # it reported the connection rather than the abort (pika 1.3-1.4). The socket is closed; we are done.
                log.debug("AMQP connection aborted while opening: %s", e)
            else:  # a bug in a callback must not silently kill the connection thread
                log.exception("AMQP I/O loop crashed")
                self.last_error = "I/O loop crashed"
                self.ready.clear()
        finally:
            self._fail_unconfirmed("client closed")
            self._ioloop.close()  # its wake-up socket pair

    def _connect(self) -> None:
        if self._closing:
            return
        self._conn = pika.SelectConnection(
            self.params,
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
            custom_ioloop=self._ioloop,
        )

    def _on_open(self, conn: pika.SelectConnection) -> None:
        conn.channel(on_open_callback=self._on_channel)

    def _on_channel(self, ch: pika.channel.Channel) -> None:
        self._ch = ch
        ch.add_on_close_callback(self._on_channel_closed)
        ch.confirm_delivery(ack_nack_callback=self._on_confirm, callback=lambda _frame: self._on_confirm_mode())

    def _on_confirm_mode(self) -> None:
        self._seq = 0
        self._backoff = 0.1
        for consumer in list(self._consumers):
            self._start_consumer(consumer)
        self.ready.set()
        log.debug("AMQP connected", extra={"generation": self.generation})

    def _on_open_error(self, _conn: Any, error: BaseException | str) -> None:
        self.last_error = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
        self._reconnect_later()

    def _on_closed(self, _conn: Any, reason: BaseException) -> None:
        self.ready.clear()
        self.generation += 1
        self._ch = self._side = None
        self._fail_unconfirmed(f"connection lost: {reason}")
        waiting, self._side_waiting = self._side_waiting, []
        for _, fut in waiting:
            fut.set_exception(BrokerUnavailable(f"connection lost: {reason}"))
        if self._closing:
            self._ioloop.stop()
            return
        self.last_error = f"{type(reason).__name__}: {reason}"
        log.warning("broker unreachable (AMQP connection lost), reconnecting: %s", reason)
        self._reconnect_later()

    def _reconnect_later(self) -> None:
        if self._closing:
            self._ioloop.stop()
            return
        self._ioloop.call_later(self._backoff, self._connect)
        self._backoff = min(self._backoff * 2, 2.0)

    def _on_channel_closed(self, ch: pika.channel.Channel, reason: BaseException) -> None:
        if ch is not self._ch or self._closing:
            return
        # A consumer on a missing queue closes the channel (404): fail that registration, keep the rest.
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker) and reason.reply_code == 404:
            for consumer in [c for c in self._consumers if not c.registered.done()]:
                self._consumers.remove(consumer)
                consumer.registered.set_exception(QueueMissing(f"queue {consumer.queue!r} does not exist: {reason.reply_text}"))
        # Start over on a fresh connection: delivery tags and confirms are per channel.
        if self._conn is not None and self._conn.is_open:
            self._conn.close(reply_text="data channel closed")

    def _publish(self, queue: str, messages: list[tuple[bytes, dict[str, Any]]], futures: list[Future[None]]) -> None:
        if self._ch is None or not self.ready.is_set():
            for f in futures:
                f.set_exception(BrokerUnavailable(f"RabbitMQ unreachable ({self.last_error})"))
            return
        for (body, headers), fut in zip(messages, futures, strict=True):
            self._seq += 1
            self._unconfirmed[self._seq] = fut
            self._ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=PERSISTENT, headers=headers or None))

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        tag, multiple = method.delivery_tag, method.multiple
        tags = [t for t in self._unconfirmed if t <= tag] if multiple else [tag]
        nacked = isinstance(method, pika.spec.Basic.Nack)
        for t in tags:
            fut = self._unconfirmed.pop(t, None)
            if fut is None:
                continue
            if nacked:
                fut.set_exception(PublishRefused("RabbitMQ refused a message (basic.nack)"))
            else:
                fut.set_result(None)

    def _fail_unconfirmed(self, why: str) -> None:
        pending, self._unconfirmed = self._unconfirmed, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(BrokerUnavailable(f"publish not confirmed: {why}"))

    def _ack(self, generation: int, tags: list[int]) -> None:
        if generation != self.generation or self._ch is None or not self._ch.is_open:
            return  # that connection is gone and the broker requeued the message: it will come again
        for tag in tags:
            self._ch.basic_ack(tag)

    def _requeue(self, generation: int, tag: int) -> None:
        if generation == self.generation and self._ch is not None and self._ch.is_open:
            # basic.reject, not basic.nack: from RabbitMQ 4.3 only a reject raises a quorum queue's delivery count, and
            # the count is what ends a message that keeps coming back (max-deliveries).
            self._ch.basic_reject(tag, requeue=True)  # else that connection is gone, and the broker requeued it already

    def _add_consumer(self, consumer: _Consumer) -> None:
        self._consumers.append(consumer)
        if self.ready.is_set():
            self._start_consumer(consumer)

    def _start_consumer(self, consumer: _Consumer) -> None:
        assert self._ch is not None
        generation = self.generation

        def deliver(_ch: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
            consumer.on_message(generation, method.delivery_tag, props, body)

        def consuming(_frame: Any) -> None:
            if not consumer.registered.done():
                consumer.registered.set_result(None)

        self._ch.basic_qos(prefetch_count=consumer.prefetch)
        consumer.tag = self._ch.basic_consume(consumer.queue, deliver, arguments=consumer.arguments, callback=consuming)

    def _stop_consuming(self, done: Future[None]) -> None:
        consumers, self._consumers = self._consumers, []
        ch = self._ch
        # Only the channel's live consumers: pika skips a tag it does not know (one the broker cancelled itself, or
        # one of a connection being replaced) without ever calling back, which would stall the chain below.
        live = ch.consumer_tags if ch is not None else []
        tags = [c.tag for c in consumers if c.tag is not None and c.tag in live]
        if ch is None or not ch.is_open or not tags:
            done.set_result(None)
            return

        # One at a time: pika keys a cancel-ok's callback by channel alone, so two waiting at once would both fire on
        # the first cancel-ok.
        def cancel(rest: list[str]) -> None:
            if not rest or not ch.is_open:
                if not done.done():
                    done.set_result(None)
                return
            tag, later = rest[0], rest[1:]
            ch.basic_cancel(tag, callback=lambda _frame: cancel(later))  # a new function each time: pika dedupes equal ones
            # pika rejects (requeues) what the broker delivers to a consumer between basic.cancel and its cancel-ok, and
            # a reject raises a quorum queue's delivery count. The caller settles those itself (it is closing, and hands
            # them back with their counts), so let them through to its callback as before the cancel; pika clears the
            # rest of the consumer's state at cancel-ok. Should this private set go, such a delivery comes again with
            # one delivery more: never lost.
            cancelling = getattr(ch, "_cancelled", None)
            if isinstance(cancelling, set):
                cancelling.discard(tag)

        cancel(tags)

    def _counts(self, queue: str, fut: Future[tuple[int, int]]) -> None:
        if self._conn is None or not self.ready.is_set():
            fut.set_exception(BrokerUnavailable(f"RabbitMQ unreachable ({self.last_error})"))
            return
        self._side_waiting.append((queue, fut))
        if self._side is not None and self._side.is_open:
            self._side.queue_declare(queue, passive=True, callback=self._on_declared)
        elif self._side is None:
            self._side = self._conn.channel(on_open_callback=self._on_side_open)
        # else: the side channel is opening; _on_side_open sends every waiting declare

    def _on_side_open(self, ch: pika.channel.Channel) -> None:
        ch.add_on_close_callback(self._on_side_closed)
        for queue, _ in self._side_waiting:
            ch.queue_declare(queue, passive=True, callback=self._on_declared)

    def _on_declared(self, frame: Any) -> None:
        # Replies on one channel come in request order.
        _, fut = self._side_waiting.pop(0)
        fut.set_result((frame.method.message_count, frame.method.consumer_count))

    def _on_side_closed(self, _ch: Any, reason: BaseException) -> None:
        self._side = None
        waiting, self._side_waiting = self._side_waiting, []
        for queue, fut in waiting:
            fut.set_exception(QueueMissing(f"queue {queue!r} does not exist: {reason}") if "404" in str(reason) else BrokerUnavailable(str(reason)))

    def _shutdown(self) -> None:
        # pika 1.x has no is_opening: a connection neither closing nor closed is open or still in its handshake, and
        # close() takes both; one between reconnection attempts has nothing to close.
        conn = self._conn
        if conn is not None and not (conn.is_closing or conn.is_closed):
            conn.close()
        else:
            self._ioloop.stop()
