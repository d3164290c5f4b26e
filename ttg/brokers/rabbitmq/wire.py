"""The RabbitMQ backend's wire framing: batch headers, delivery tokens, and waiting for confirms.

A task or result message with the ``x-ttg-batch`` header carries several parts,
msgpack-packed as a list of byte strings; without it, the body is one part, as
any producer may publish.
"""

from __future__ import annotations

from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeGuard

import msgpack
import pika

from ttg.errors import BrokerUnavailable, MessageError

_CONFIRM_WAIT_S = 30.0
BATCH = "x-ttg-batch"
CHUNK = "x-ttg-chunk"
PRIOR = "x-ttg-prior"  # deliveries a chunk had before this message was published (a retry, or a split batch)


@dataclass(frozen=True)
class Token:
    generation: int
    tag: int
    chunk_id: int | None
    last: bool = True  # the last chunk of its task message: completing it sends the message's results


def pack_batch(bodies: list[bytes]) -> bytes:
    return msgpack.packb(bodies, use_bin_type=True)  # type: ignore[no-any-return]


def unpack_batch(body: bytes) -> list[bytes] | None:
    """The parts of a batch message, or None when it is not a well-formed batch."""
    try:
        parts = msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    if not isinstance(parts, list) or not all(isinstance(p, bytes) for p in parts):
        return None
    return parts


def await_confirms(futures: list[Future[None]], what: str, timeout_s: float = _CONFIRM_WAIT_S) -> None:
    try:
        for f in futures:
            f.result(timeout=timeout_s)
    except FutureTimeout:
        raise BrokerUnavailable(f"RabbitMQ did not confirm {what} within {timeout_s:g}s") from None


_MAX_COUNT = 1_000_000  # deliveries counted in a header; more is not a count but a forgery


def _is_int(value: object) -> TypeGuard[int]:
    # pika decodes AMQP long integers as its own int subclass (pika.compat.long); a bool is an int too, and is not one.
    return isinstance(value, int) and not isinstance(value, bool)


def _count_header(headers: dict[str, Any], name: str) -> int:
    value = headers.get(name, 0)
    if not _is_int(value) or not 0 <= value <= _MAX_COUNT:
        raise MessageError(f"header {name} must be a delivery count from 0 to {_MAX_COUNT:,} (got {str(value)[:40]!r})")
    return int(value)


def read_task(props: pika.BasicProperties, body: bytes) -> tuple[int, list[tuple[int | None, bytes]]]:
    """(deliveries so far including this one, [(chunk id from the headers or None, task body)]); MessageError for
    headers no TTG producer writes. The chunk ids here only route dead letters: the worker checks every body
    against the plan, and the coordinator every dead letter's body."""
    headers = props.headers if props.headers is not None else {}
    if not isinstance(headers, dict):
        raise MessageError("message headers are not a table")
    deliveries = _count_header(headers, PRIOR) + _count_header(headers, "x-delivery-count") + 1
    chunks = headers.get(BATCH)
    if chunks is None:
        chunk = headers.get(CHUNK)
        return deliveries, [(int(chunk) if _is_int(chunk) else None, body)]
    if not isinstance(chunks, list) or not chunks or not all(_is_int(c) for c in chunks):
        # An empty batch would be settled by nobody and hold a prefetch slot for good.
        raise MessageError(f"header {BATCH} must be a non-empty list of chunk ids (got {str(chunks)[:40]!r})")
    parts = unpack_batch(body)
    if parts is None or len(parts) != len(chunks):
        raise MessageError(f"a batch of {len(chunks)} chunk ids whose body is not {len(chunks)} task messages")
    return deliveries, [(int(c), part) for c, part in zip(chunks, parts, strict=True)]


def wait_registered(fut: Future[None], queue_name: str) -> None:
    """Wait for a consumer on ``queue_name`` to be registered; BrokerUnavailable after 10 s."""
    try:
        fut.result(timeout=10.0)
    except FutureTimeout:
        raise BrokerUnavailable(f"RabbitMQ did not start a consumer on {queue_name} within 10s") from None
