"""The RabbitMQ queues of one run, and the coordinator's blocking control connection.

Control operations (declare, counts, dead letters, end, delete) are rare and
synchronous, so they use a plain ``BlockingConnection`` opened on first use and
re-opened after an error; the data path (tasks, results) uses the asynchronous
:class:`~ttg.brokers.rabbitmq.amqp_client.AmqpClient`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import pika
import pika.adapters.blocking_connection
import pika.exceptions

from ttg.broker import DeadLetter
from ttg.config import redact_url
from ttg.errors import BrokerError, BrokerUnavailable, RunConflict

log = logging.getLogger(__name__)
_P = ParamSpec("_P")
_R = TypeVar("_R")


class QueueNames:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        base = f"ttg.{run_id}."
        self.tasks, self.retry, self.results = base + "tasks", base + "retry", base + "results"
        self.dead, self.rejected, self.control = base + "dead", base + "rejected", base + "control"
        self.owner = base + "owner"  # the run's lease: an exclusive queue, gone with its coordinator's connection

    @property
    def all(self) -> list[str]:
        return [self.tasks, self.retry, self.results, self.dead, self.rejected, self.control]


def _translated(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Driver errors become TTG's where they enter; the broken connection is dropped, to be re-opened next time."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        self = args[0]
        assert isinstance(self, Control)
        try:
            return fn(*args, **kwargs)
        except pika.exceptions.ChannelClosedByBroker as e:
            self.close()
            raise BrokerError(f"RabbitMQ refused {fn.__name__}: {e.reply_code} {e.reply_text}") from None
        except (pika.exceptions.AMQPError, OSError) as e:
            self.close()
            raise BrokerUnavailable(
                f"RabbitMQ unreachable at {redact_url(self.url)} ({type(e).__name__}: {e}); check the broker URL and that rabbitmq-server is running"
            ) from None

    return wrapper


class Control:
    def __init__(self, url: str, names: QueueNames) -> None:
        self.url = url
        self.q = names
        self._conn: pika.BlockingConnection | None = None
        self._ch: pika.adapters.blocking_connection.BlockingChannel | None = None
        self.owns_lease = False

    def _channel(self) -> pika.adapters.blocking_connection.BlockingChannel:
        if self._ch is None or not self._ch.is_open:
            fresh = self._conn is None or not self._conn.is_open
            if fresh:
                params = pika.URLParameters(self.url)
                params.connection_attempts, params.socket_timeout, params.heartbeat = 1, 5, 60
                self._conn = pika.BlockingConnection(params)
            assert self._conn is not None
            self._ch = self._conn.channel()
            self._ch.confirm_delivery()
            if fresh and self.owns_lease:
                # The lease went with the old connection (a broker restart): take it again, unless someone else has.
                self._declare_owner(self._ch)
        return self._ch

    def _declare_owner(self, ch: pika.adapters.blocking_connection.BlockingChannel) -> None:
        try:
            ch.queue_declare(self.q.owner, exclusive=True, auto_delete=True)
        except pika.exceptions.ChannelClosedByBroker as e:
            self._ch = None
            if e.reply_code != 405:  # 405 RESOURCE_LOCKED: another connection holds the exclusive queue
                raise
            self.owns_lease = False
            raise RunConflict(f"run {self.q.run_id} is being run by another coordinator; wait for it to finish, or pick another --run-id") from None

    @_translated
    def claim(self) -> None:
        """Hold the run's exclusive owner queue: RabbitMQ itself lets go of it when this connection dies."""
        self._declare_owner(self._channel())
        self.owns_lease = True

    @_translated
    def release(self) -> None:
        if self.owns_lease:
            self.owns_lease = False
            self._channel().queue_delete(self.q.owner)

    @_translated
    def exists(self) -> bool:
        """Whether the run's task queue exists (the run was declared before)."""
        return self._exists(self.q.tasks)

    def _exists(self, name: str) -> bool:
        try:
            self._channel().queue_declare(name, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker as e:
            self._ch = None
            if e.reply_code != 404:
                raise
            return False

    def close(self) -> None:
        conn, self._conn, self._ch = self._conn, None, None
        if conn is not None and conn.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                conn.close()

    @_translated
    def declare(self, *, retry_delay_ms: int) -> None:
        ch = self._channel()
        quorum = {"x-queue-type": "quorum"}
        ch.queue_declare(self.q.tasks, durable=True, arguments=quorum)
        ch.queue_declare(
            self.q.retry,
            durable=True,
            arguments={
                **quorum,
                "x-message-ttl": retry_delay_ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.q.tasks,
                # Classic dead-lettering may drop a message if the broker dies mid-way; this does not.
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        ch.queue_declare(self.q.results, durable=True)
        for name in (self.q.dead, self.q.rejected, self.q.control):
            ch.queue_declare(name, durable=True)
        # A resumed run may have been ended by a coordinator that gave up (--timeout): it is live again.
        ch.queue_purge(self.q.control)

    @_translated
    def counts(self, names: list[str]) -> dict[str, tuple[int, int]]:
        """(ready messages, consumers) of each named queue; (0, 0) for one that does not exist."""
        out = {}
        for name in names:
            try:
                ok = self._channel().queue_declare(name, passive=True)
                out[name] = (ok.method.message_count, ok.method.consumer_count)
            except pika.exceptions.ChannelClosedByBroker as e:
                if e.reply_code != 404:
                    raise
                self._ch = None
                out[name] = (0, 0)
        return out

    @_translated
    def dead_letters(self, queue: str | None = None) -> list[DeadLetter]:
        """Every message in the dead (or the given) queue, read without removing it (they are returned to their queue)."""
        out: list[DeadLetter] = []
        ch = self._channel()
        last_tag = None
        while True:
            method, props, body = ch.basic_get(queue or self.q.dead, auto_ack=False)
            if method is None:
                break
            last_tag = method.delivery_tag
            out.append(_dead_letter(props.headers or {}, body))
        if last_tag is not None:
            ch.basic_nack(last_tag, multiple=True, requeue=True)
        return out

    @_translated
    def end(self) -> None:
        self._channel().basic_publish("", self.q.control, b"ended", pika.BasicProperties(delivery_mode=2))

    @_translated
    def delete(self) -> None:
        for name in self.q.all:
            self._channel().queue_delete(name)


def _dead_letter(headers: dict[str, Any], body: bytes) -> DeadLetter:
    """Read defensively: anyone who can publish to the dead queue can put anything in these headers."""
    chunk, reason, prior = headers.get("x-ttg-chunk"), headers.get("x-ttg-reason", ""), headers.get("x-ttg-prior", 0)
    return DeadLetter(
        chunk if isinstance(chunk, int) and not isinstance(chunk, bool) else None,
        reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)[:2000],
        prior if isinstance(prior, int) and not isinstance(prior, bool) else 0,
        body,
    )
