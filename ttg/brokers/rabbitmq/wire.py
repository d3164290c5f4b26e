"""The RabbitMQ backend's wire framing: batch headers, delivery tokens, and waiting for confirms.

A task or result message with the ``x-ttg-batch`` header carries several parts,
msgpack-packed as a list of byte strings; without it, the body is one part, as
any producer may publish.
"""

from __future__ import annotations

from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import msgpack

from ttg.errors import BrokerUnavailable

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
