"""Wire messages: versioned, frozen, msgpack-encoded. Never pickle.

Every message is a msgpack map with ``v`` (schema version) and ``k`` (kind).
``decode_*`` raise :class:`MessageError` naming the field, what was expected and
what came; the worker dead-letters such a message and carries on.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from ttg.errors import MessageError
from ttg.plan import ChunkPlan

VERSION = 1
_F64 = np.dtype("<f8")
MAC_BYTES = 16  # a receipt's HMAC-SHA256, truncated (ttg.claimcheck)


@dataclass(frozen=True)
class TaskMessage:
    run_id: str
    chunk_id: int
    start: int
    stop: int

    def encode(self) -> bytes:
        return task_frame(self.run_id).body(self.chunk_id, self.start, self.stop)


@dataclass(frozen=True)
class TaskFrame:
    """A run's task message with its three integers left out: ``head``, the chunk id, ``before_start``, the first
    parameter, ``before_stop``, the end, each integer packed as msgpack packs it. The one framing of a task, so that a
    broker can build the bodies itself (Redis: a Lua script with ``cmsgpack``, for a plan's many chunks) and produce
    the bytes :meth:`TaskMessage.encode` does."""

    head: bytes
    before_start: bytes
    before_stop: bytes

    def body(self, chunk_id: int, start: int, stop: int) -> bytes:
        return b"".join((self.head, _pack(chunk_id), self.before_start, _pack(start), self.before_stop, _pack(stop)))


@functools.lru_cache(maxsize=8)
def task_frame(run_id: str) -> TaskFrame:
    fields = {"v": VERSION, "k": "task", "run": run_id}
    header = msgpack.Packer().pack_map_header(len(fields) + 3)  # and c, a, b
    return TaskFrame(b"".join([header, *(_pack(x) for kv in fields.items() for x in kv), _pack("c")]), _pack("a"), _pack("b"))


@dataclass(frozen=True)
class ResultMessage:
    run_id: str
    chunk_id: int
    start: int
    stop: int
    worker_id: str
    deliveries: int
    values: bytes | memoryview  # float64 little-endian, one per parameter in [start, stop) (a worker's is a view of its reply slot)
    compute_s: float
    # When the worker had the values (Unix time, its host's clock): the coordinator's recording lag is measured from it.
    # Optional on the wire (a result without it is still a result), so a worker of an older version still counts.
    finished_at: float | None = None

    def array(self) -> np.ndarray:
        return np.frombuffer(self.values, dtype=_F64)

    def encode(self) -> bytes:
        return _pack({**_outcome_fields(self, "result"), "x": self.values})


@dataclass(frozen=True)
class ReceiptMessage:
    """A claim check for a chunk's values: where its worker put them in the run's staging directory, not the values.

    ``crc`` is the values' CRC-32 and ``mac`` an HMAC of the receipt under the run's key (see :mod:`ttg.claimcheck`):
    a receipt forged on the broker, without that key, vouches for nothing.
    """

    run_id: str
    chunk_id: int
    start: int
    stop: int
    worker_id: str
    deliveries: int
    offset: int  # byte offset of the values in the worker's staging file
    crc: int
    mac: bytes
    compute_s: float
    finished_at: float | None = None

    def encode(self) -> bytes:
        return _pack({**_outcome_fields(self, "receipt"), "o": self.offset, "s": self.crc, "m": self.mac})


Outcome = ResultMessage | ReceiptMessage  # what a worker sends for a computed chunk: the values, or a claim check for them


def _outcome_fields(msg: Outcome, kind: str) -> dict[str, Any]:
    """The fields a result and a receipt share."""
    fields = {"v": VERSION, "k": kind, "run": msg.run_id, "c": msg.chunk_id, "a": msg.start, "b": msg.stop, "w": msg.worker_id}
    fields |= {"d": msg.deliveries, "t": msg.compute_s}
    return fields if msg.finished_at is None else {**fields, "f": msg.finished_at}


def _pack(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def _unpack(raw: bytes, kind: str, also: tuple[str, ...] = ()) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types for garbage input
        raise MessageError(f"{kind} message is not valid msgpack ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise MessageError(f"{kind} message must be a map (got {type(obj).__name__})")
    if obj.get("v") != VERSION:
        raise MessageError(f"{kind} message has schema version {obj.get('v')!r}; this worker understands version {VERSION}")
    if obj.get("k") != kind and obj.get("k") not in also:
        raise MessageError(f"expected a {' or '.join((kind, *also))} message (got kind {obj.get('k')!r})")
    return obj


def _field(obj: dict[str, Any], key: str, typ: type | tuple[type, ...], kind: str) -> Any:
    value = obj.get(key)
    if type(value) is typ:  # the common case, decided at once (a coordinator decodes a message per chunk)
        return value
    if not isinstance(value, typ) or isinstance(value, bool):
        want = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise MessageError(f"{kind} message field {key!r} must be {want} (got {value!r:.40})")
    return value


def decode_task(raw: bytes) -> TaskMessage:
    obj = _unpack(raw, "task")
    msg = TaskMessage(_field(obj, "run", str, "task"), _field(obj, "c", int, "task"), _field(obj, "a", int, "task"), _field(obj, "b", int, "task"))
    if msg.chunk_id < 0 or not 0 <= msg.start < msg.stop:
        raise MessageError(f"task message has an invalid range: chunk {msg.chunk_id}, params [{msg.start}, {msg.stop})")
    return msg


def decode_result(raw: bytes) -> ResultMessage:
    result = decode_outcome(raw)
    if not isinstance(result, ResultMessage):
        raise MessageError(f"expected a result message with values, got a receipt for chunk {result.chunk_id}")
    return result


def decode_outcome(raw: bytes) -> Outcome:
    """A result with its values, or a receipt for values in the run's staging directory; MessageError otherwise."""
    obj = _unpack(raw, "result", also=("receipt",))
    finished_at = None if obj.get("f") is None else float(_field(obj, "f", (int, float), "result"))
    if finished_at is not None and not math.isfinite(finished_at):
        raise MessageError(f"result for chunk {obj.get('c')!r:.20} has a finishing time that is not a number ({finished_at!r})")
    if obj["k"] == "receipt":
        return _receipt(obj, finished_at)
    msg = ResultMessage(*_shared(obj, "result"), _field(obj, "x", bytes, "result"), _compute_s(obj, "result"), finished_at)
    if len(msg.values) != (msg.stop - msg.start) * _F64.itemsize:
        raise MessageError(f"result for chunk {msg.chunk_id} holds {len(msg.values) // 8} values for {msg.stop - msg.start} parameters")
    return msg


def _shared(obj: dict[str, Any], kind: str) -> tuple[str, int, int, int, str, int]:
    """The leading fields a result and a receipt share (as :func:`_outcome_fields` encodes them): run, chunk, start,
    stop, worker, deliveries."""
    return (
        _field(obj, "run", str, kind),
        _field(obj, "c", int, kind),
        _field(obj, "a", int, kind),
        _field(obj, "b", int, kind),
        _field(obj, "w", str, kind),
        _field(obj, "d", int, kind),
    )


def _compute_s(obj: dict[str, Any], kind: str) -> float:
    return float(_field(obj, "t", (int, float), kind))


def _receipt(obj: dict[str, Any], finished_at: float | None) -> ReceiptMessage:
    kind = "receipt"
    where = (_field(obj, "o", int, kind), _field(obj, "s", int, kind), _field(obj, "m", bytes, kind))
    msg = ReceiptMessage(*_shared(obj, kind), *where, _compute_s(obj, kind), finished_at)
    if not 0 <= msg.offset < 1 << 62 or not 0 <= msg.crc < 1 << 32 or len(msg.mac) != MAC_BYTES or msg.stop <= msg.start:
        what = f"offset {msg.offset}, crc {msg.crc}, {len(msg.mac)}-byte mac, [{msg.start}, {msg.stop})"
        raise MessageError(f"receipt for chunk {msg.chunk_id} is malformed ({what})")
    return msg


def decode_planned_task(raw: bytes, run_id: str, plan: ChunkPlan) -> TaskMessage:
    """A task of run ``run_id`` whose range is the plan's for its chunk id, or MessageError saying how it is not.

    Workers check every task before computing it: a well-formed task whose range disagrees with
    its chunk id would otherwise be recorded as that chunk, and the real chunk dropped as a duplicate.
    """
    task = decode_task(raw)
    if task.run_id != run_id:
        raise MessageError(f"task belongs to run {task.run_id!r}, not {run_id!r}")
    if not 0 <= task.chunk_id < plan.chunks:
        raise MessageError(f"task names chunk {task.chunk_id}, outside the plan's 0..{plan.chunks - 1}")
    chunk = plan.chunk(task.chunk_id)
    if (task.start, task.stop) != (chunk.start, chunk.stop):
        raise MessageError(f"task for chunk {task.chunk_id} covers [{task.start}, {task.stop}), the plan says [{chunk.start}, {chunk.stop})")
    return task
