"""The compute child itself (``python -m ttg.compute``): loads the algorithm, serves ranges until its worker goes."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
import os
import signal
import time
from collections.abc import Sequence

import numpy as np

from ttg import algorithms
from ttg.compute.wire import (
    FIELD,
    INDICES,
    LOAD_FAILED,
    MAX_MERGED,
    MERGE,
    OK,
    RAISED,
    RECORD,
    REPLY,
    REQUEST,
    SYNC,
    SYNCED,
    Reader,
    records_bytes,
    write_all,
    write_header_and,
)
from ttg.errors import AlgorithmError
from ttg.sweep import SweepSpec

log = logging.getLogger(__name__)

# -- the child ----------------------------------------------------------------------------------
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the worker died before the signal was set
        os._exit(1)


class _Child:
    """The child's side: requests in, values into slots (or over the pipe), one SYNCED reply per batch."""

    def __init__(self, rep: int, shm: mmap.mmap | None, nslots: int, slot_bytes: int, fn: algorithms.Algorithm, cost_us: float, sweep: SweepSpec | None):
        self.rep, self.shm, self.slot_bytes = rep, shm, slot_bytes
        self.first_slot = records_bytes(nslots)
        self.fn, self.cost_us, self.sweep = fn, cost_us, sweep
        self.busy_ns = self.ranges = 0  # this batch's compute time and ranges, for the SYNC reply
        self.group: list[tuple[int, int, int]] = []  # adjacent mergeable ranges in slots (start, stop, slot): one call

    def serve(self, reader: Reader) -> None:
        while True:
            header = reader.exactly(REQUEST.size)
            if header is None:
                return  # the worker is gone
            start, stop, field = REQUEST.unpack(header)
            t0 = time.perf_counter_ns()
            if start == SYNC:
                self.run_group()
                self.busy_ns += time.perf_counter_ns() - t0
                write_all(self.rep, REPLY.pack(SYNCED, self.busy_ns // max(self.ranges, 1)))
                self.busy_ns = self.ranges = 0
                continue
            if stop < 0:
                return
            indices = reader.exactly(stop * 8) if start == INDICES else None
            if start == INDICES and indices is None:
                return
            self.ranges += 1
            if start >= 0 and field >= 0 and self.shm is not None:
                self.add_to_group(start, stop, field)
            else:
                self.run_group()  # replies go in request order
                self.reply_over_pipe(*self.compute(start, stop, indices))
            self.busy_ns += time.perf_counter_ns() - t0

    def add_to_group(self, start: int, stop: int, field: int) -> None:
        """Computed when the group ends: at a gap, a range that may not merge, the size cap, or the batch's SYNC."""
        group = self.group
        if group and not (field & MERGE and start == group[-1][1] and stop - group[0][0] <= MAX_MERGED):
            self.run_group()
        group.append((start, stop, field & ~MERGE))

    def compute(self, start: int, stop: int, indices: bytearray | None = None) -> tuple[int, np.ndarray | None, bytes]:
        try:
            if indices is not None:
                idx = np.frombuffer(indices, dtype="<i8")
                return OK, algorithms.checked(algorithms.call(self.fn, idx, self.sweep), idx), b""
            return OK, algorithms.evaluate(self.fn, start, stop, self.cost_us, self.sweep), b""
        except Exception as e:  # the user's algorithm may raise anything: the worker retries or dead-letters the chunk
            return RAISED, None, f"{type(e).__name__}: {e}".encode()

    def run_group(self) -> None:
        """One call of the algorithm for the whole group; one per range if that raised (so only the bad one fails)."""
        group = self.group
        if not group:
            return
        status, values, _ = self.compute(group[0][0], group[-1][1]) if len(group) > 1 else (RAISED, None, b"")
        if status == OK and values is not None:
            base = group[0][0]
            for start, stop, slot in group:
                self.into_slot(slot, OK, values[start - base : stop - base], b"")
        else:
            for start, stop, slot in group:
                self.into_slot(slot, *self.compute(start, stop))
        group.clear()

    def reply_over_pipe(self, status: int, values: np.ndarray | None, text: bytes) -> None:
        if status == RAISED or values is None:
            write_all(self.rep, REPLY.pack(RAISED, len(text)) + text)
            return
        data = memoryview(np.ascontiguousarray(values, dtype="<f8").data).cast("B")
        write_header_and(self.rep, REPLY.pack(OK, data.nbytes), data)

    def into_slot(self, slot: int, status: int, values: np.ndarray | None, text: bytes) -> None:
        shm = self.shm
        assert shm is not None
        offset = self.first_slot + slot * self.slot_bytes
        if status == OK and values is not None:
            if values.nbytes <= self.slot_bytes:
                np.copyto(np.frombuffer(shm, dtype="<f8", count=len(values), offset=offset), values)
            else:  # cannot happen for a checked range of a size the worker fitted in the slot; said, never overrun
                status, text = RAISED, f"{len(values)} values do not fit the reply slot of {self.slot_bytes // 8}".encode()
        if status == RAISED:
            text = text[: self.slot_bytes]
            shm[offset : offset + len(text)] = text
        length = values.nbytes if status == OK and values is not None else len(text)
        # The length first, the status last: a record whose status is written is whole.
        FIELD.pack_into(shm, slot * RECORD.size + 8, length)
        FIELD.pack_into(shm, slot * RECORD.size, status)


def _serve(req: int, rep: int, shm: mmap.mmap | None, nslots: int, slot_bytes: int, algorithm: str, cost_us: float, grid: Sequence[str]) -> None:
    try:
        fn = algorithms.load(algorithm)
        sweep = SweepSpec.from_axes(tuple(grid)) if grid else None
    except Exception as e:  # anything the user's module raises on import is a load failure, said in one line
        text = (str(e) if isinstance(e, AlgorithmError) else f"cannot load algorithm {algorithm!r}: {type(e).__name__}: {e}").encode()
        write_all(rep, REPLY.pack(LOAD_FAILED, len(text)) + text)
        return
    write_all(rep, REPLY.pack(OK, 0))
    _Child(rep, shm, nslots, slot_bytes, fn, cost_us, sweep).serve(Reader(req))


def main(argv: Sequence[str]) -> None:
    parent, req, rep, shm_fd, nslots, slot_bytes, algorithm, cost_us, *grid = argv
    _die_with_parent(int(parent))
    # Signals are the worker's business: it finishes the chunk this child is computing, then closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    n, size = int(nslots), int(slot_bytes)
    shm = mmap.mmap(int(shm_fd), records_bytes(n) + n * size) if int(shm_fd) >= 0 else None
    _serve(int(req), int(rep), shm, n, size, algorithm, float(cost_us), grid)
