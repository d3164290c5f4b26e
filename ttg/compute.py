"""The compute child: the user's algorithm runs in a process of its own, never in the one that holds the broker.

Why: a worker's liveness (Redis claim heartbeats, RabbitMQ's heartbeat frames on pika's I/O thread)
must not depend on the algorithm. A C call that holds the GIL for seconds (a regex, a
non-releasing extension) starves every thread of the process it runs in, and the broker then
takes a live worker's chunks away, or drops its connection. So the worker forks nothing and runs
no user code: it starts ``python -m ttg.compute`` (the prefork pattern of Celery and Dramatiq,
one child per worker) and hands it ``(start, stop)`` ranges over a pipe. No pickle crosses the boundary.

Ranges go in **batches**: the worker submits the tasks it holds, :meth:`ComputeProcess.flush` sends them in one
write followed by a SYNC request, and the child writes each range's values into a shared-memory slot (a ``memfd``
both map) with a status record beside it, then answers the SYNC with one reply. So a batch of 16 chunks costs two
pipe writes and two wake-ups, not 32 of each: at 1,000 parameters per chunk and no work per parameter, the
per-chunk wake-ups of one reply per range cost TTG 31 % of its throughput against ``multiprocessing.Pool``
(``ttg bench``, measured side by side with the algorithm in the worker's own process). The SYNC is what makes the
slots' records safe to read (the pipe orders the child's writes before the worker's reads); after the child died,
its exit does. A worker with no slots (a chunk too large for one) gets its values over the pipe, one reply each.

A child that dies (segfault, ``os._exit``, the OOM killer) fails exactly the range it was computing with
:class:`ComputeCrashed`, naming the signal: the ranges of its batch it had finished are read from their records and
delivered, and those behind it go to a new child unharmed. The worker stays connected throughout. The child dies
with its worker (parent-death signal, and end of file on its request pipe).

Wire format (little-endian). Request ``<qqq`` (start, stop, slot): a range [start, stop) when start >= 0 (slot >= 0:
values into that slot; -1: over the reply pipe); start == INDICES: ``stop`` int64 parameter indices follow (the
verifier's samples, computed without ``cost_us``, answered over the pipe); start == SYNC: the end of a batch;
stop < 0 otherwise: exit. Reply ``<BQ`` (status, n): OK or RAISED followed by n bytes (values, or the error text);
LOAD_FAILED with its text, or an empty OK, once at start-up; SYNCED with n = the child's mean nanoseconds per
range of that batch. A slot's record is two int64, (status, byte length), status PENDING until the child writes it;
a RAISED range leaves its error text in the slot.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import logging
import mmap
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ttg import algorithms
from ttg.errors import AlgorithmError, AlgorithmNotFound
from ttg.sweep import SweepSpec

log = logging.getLogger(__name__)

_REQUEST = struct.Struct("<qqq")
_REPLY = struct.Struct("<BQ")
OK, RAISED, LOAD_FAILED, SYNCED = 0, 1, 2, 3
PENDING = -1  # a slot record's status until the child has written the slot
INDICES, SYNC = -1, -2  # request kinds, in the start field
_EXIT = _REQUEST.pack(0, -1, -1)
_PIPE_BYTES = 1 << 20  # a chunk of 100,000 values fits in one pipe buffer: one wake-up per reply, not sixteen
_READ_AHEAD = 1 << 16  # small messages are read in pieces this big: many of them per system call
MAX_BATCH = 16  # ranges per batch: past this, a batch's two wake-ups are noise against its 16 results
_MAX_SLOT_BYTES = 16 << 20  # a chunk of more than 2M values goes through the pipe instead
_MAX_SHM_BYTES = 64 << 20  # all slots together: fewer (and smaller batches) for large chunks
_MIN_SLOT_BYTES = 4096  # room for an error text however small the chunk
MERGE = 1 << 32  # in a request's slot field: the child may evaluate this range in one call with the one before it
_MAX_MERGED = 1 << 14  # parameters in one merged call: past this, arrays outgrow the CPU cache and a call is slower per value
_RECORD = struct.Struct("<qq")  # a slot's record: status, byte length
_FIELD = struct.Struct("<q")


class ComputeCrashed(AlgorithmError):
    """The compute child died while evaluating a range (a crash of the algorithm, or a kill)."""

    def __init__(self, message: str, how: str = "") -> None:
        super().__init__(message)
        self.how = how  # how the child ended ("killed by SIGSEGV"), when it was seen to end


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_header_and(fd: int, header: bytes, data: memoryview) -> None:
    """``header`` then ``data`` in one system call where the pipe takes it all, with no copy into a joined buffer."""
    sent = os.writev(fd, [header, data])
    if sent < len(header):
        _write_all(fd, header[sent:])
        sent = len(header)
    _write_all(fd, data[sent - len(header) :])


class _Reader:
    """Reads one end of a pipe: small messages many per system call, large payloads straight into their buffer."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = b""
        self._pos = 0

    def exactly(self, n: int) -> bytearray | None:
        """``n`` bytes, or None at end of file (the other side is gone)."""
        have = len(self._buf) - self._pos
        if have >= n:
            out = bytearray(self._buf[self._pos : self._pos + n])
            self._pos += n
            return out
        out = bytearray(n)
        out[:have] = self._buf[self._pos :]
        self._buf, self._pos = b"", 0
        view = memoryview(out)
        got = have
        while got < n:
            if n - got < _READ_AHEAD:  # a small remainder: read ahead, keeping what follows for the next call
                piece = os.read(self.fd, _READ_AHEAD)
                if not piece:
                    return None
                take = min(len(piece), n - got)
                view[got : got + take] = piece[:take]
                got += take
                self._buf = piece[take:]
            else:
                k = os.readv(self.fd, [view[got:]])
                if k == 0:
                    return None
                got += k
        return out


def _widen(fd: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # Linux only, and capped by /proc/sys/fs/pipe-max-size
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def _records_bytes(slots: int) -> int:
    return -(-slots * 16 // mmap.PAGESIZE) * mmap.PAGESIZE


class _Request(NamedTuple):
    wire: bytes  # what is sent
    slot: int  # where the values come back; -1: over the reply pipe
    batch: int  # the flush that sends it: its SYNC says the slot's record is written
    merge: bool = False  # sent with MERGE: if the child died in it, it may have died in a neighbour's range

    @property
    def span(self) -> tuple[int, int]:
        start, stop, _ = _REQUEST.unpack_from(self.wire)
        return start, stop

    def without_merge(self) -> _Request:
        return self._replace(wire=_REQUEST.pack(*self.span, self.slot), merge=False) if self.merge else self


class ComputeProcess:
    """One compute child for one worker; used from one thread (the worker's main thread)."""

    def __init__(self, algorithm: str, cost_us: float = 0.0, grid: Sequence[str] = (), slot_values: int = 0) -> None:
        """``slot_values``: the largest range the caller submits; > 0 sets up shared-memory reply slots that size, and
        then :meth:`result` returns a view of a slot, valid until the next call of :meth:`result` (copy it to keep it).
        """
        self.algorithm = algorithm
        self.cost_us = cost_us
        self.grid = tuple(grid)
        slot_bytes = max(_MIN_SLOT_BYTES, slot_values * 8)
        fits = 0 < slot_values * 8 <= _MAX_SLOT_BYTES
        self._slot_bytes = slot_bytes if fits else 0
        # Two batches in flight and the slot of the last values handed out; fewer when slots are large.
        self._nslots = max(3, min(2 * MAX_BATCH + 1, _MAX_SHM_BYTES // slot_bytes)) if fits else 0
        self._shm_fd = -1
        self._shm: mmap.mmap | None = None
        self._records_at = 0  # where the slots begin in the mapping (the records come first)
        self._free: list[int] = []  # slots no request and no handed-out view uses; reused last-in first-out
        self._lent = -1  # the slot of the values result() returned last: free again at the next result()
        self._proc: subprocess.Popen[bytes] | None = None
        self._to_child = -1
        self._reader: _Reader | None = None
        self._pending: deque[_Request] = deque()  # submitted, result not read yet, oldest first
        self._unsent = 0  # the newest this many of _pending wait for flush()
        self._flushes = 0  # batches sent
        self._synced = 0  # batches whose SYNC was read (or that a dead child can no longer answer)
        self._early: deque[tuple[int, bytearray]] = deque()  # pipe replies read while waiting for a SYNC
        self._dead_how = ""  # how the child ended, while its finished ranges are still being read
        self._finished_by_dead: int | None = None  # once the child died: how many of the oldest pending it finished
        self._blame_unsure = False  # the child died in a merged call: which of its ranges killed it is not known yet
        self._died_idle = False  # the child died having finished all it received: nobody is to blame
        self._careful = 0  # results to read before ranges may be merged again (after a crash in a merged call)
        self._stranded: list[str] = []  # requests queued behind a crash for which no new child could start: their errors
        self.restarts = 0
        self.chunk_s: float | None = None  # the child's mean compute time per range in the last batch

    @property
    def capacity(self) -> int:
        """How many ranges may be pending at once with every one in a slot (more go over the pipe)."""
        return self._nslots - 1 if self._nslots else 2

    def start(self, timeout_s: float | None = None) -> None:
        """Start the child and wait until it has loaded the algorithm (AlgorithmNotFound when it cannot, or when the
        import takes more than ``timeout_s``; ComputeCrashed when the import killed the child)."""
        if self._slot_bytes and self._shm is None:
            # One mapping for the life of this object: a child started after a crash maps the same slots, so a range
            # queued behind the crash is resent unchanged.
            self._shm_fd = os.memfd_create("ttg-compute-slots", os.MFD_CLOEXEC)
            self._records_at = _records_bytes(self._nslots)
            size = self._records_at + self._nslots * self._slot_bytes
            os.ftruncate(self._shm_fd, size)
            self._shm = mmap.mmap(self._shm_fd, size)
            self._free = list(range(self._nslots - 1, -1, -1))
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        for fd in (req_w, rep_w):
            _widen(fd)
        shm = (str(self._shm_fd), str(self._nslots), str(self._slot_bytes)) if self._shm is not None else ("-1", "0", "0")
        args = [sys.executable, "-m", "ttg.compute", str(os.getpid()), str(req_r), str(rep_w), *shm, self.algorithm, repr(self.cost_us), *self.grid]
        passed = (req_r, rep_w, self._shm_fd) if self._shm is not None else (req_r, rep_w)
        try:
            # From the worker's main thread, which lives as long as the worker: the child's parent-death signal is
            # tied to the thread that forked it.
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, pass_fds=passed)
        except OSError as e:  # EAGAIN, ENOMEM: likely just after the OOM killer took the last one
            for fd in (req_w, rep_r):
                os.close(fd)
            raise ComputeCrashed(f"no compute process could be started: {e}") from e
        finally:
            os.close(req_r)
            os.close(rep_w)
        self._to_child, self._reader = req_w, _Reader(rep_r)
        self._dead_how, self._finished_by_dead, self._died_idle = "", None, False
        # A child that fails to start is dropped alone: the slots, and the ranges waiting for a child, stay.
        if timeout_s is not None and not select.select([rep_r], [], [], timeout_s)[0]:
            self._drop_child(kill=True)
            raise AlgorithmNotFound(f"importing algorithm {self.algorithm!r} took more than {timeout_s:g} s; check what its module does when imported")
        reply = self._next_reply()
        if reply is None:
            how = self._dead_how
            self._drop_child()
            raise ComputeCrashed(f"the compute process {how} while importing algorithm {self.algorithm!r}", how)
        if reply[0] == LOAD_FAILED:
            self._drop_child()
            raise AlgorithmNotFound(reply[1].decode(errors="replace"))

    def _drop_child(self, kill: bool = False) -> None:
        """Let a child that did not start go: its process and pipes, nothing else."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if kill:
                proc.kill()
            proc.wait()
        self._close_fds()
        self._dead_how, self._finished_by_dead, self._died_idle = "", None, False

    def evaluate(self, start: int, stop: int) -> np.ndarray:
        """The algorithm's values for parameters [start, stop), computed in the child.

        Raises AlgorithmError when the algorithm raised (the child carries on), ComputeCrashed when
        the child died (the next call starts a new one).
        """
        self.submit(start, stop)
        return self.result()

    def evaluate_indices(self, indices: np.ndarray) -> np.ndarray:
        """The algorithm's values at arbitrary parameter indices (the verifier's reference), with no simulated cost."""
        idx = np.ascontiguousarray(indices, dtype="<i8")
        self._queue(_REQUEST.pack(INDICES, len(idx), -1) + idx.tobytes(), -1)
        return self.result()

    def submit(self, start: int, stop: int) -> None:
        """Queue [start, stop) for the child; :meth:`flush` sends what is queued as one batch, and :meth:`result`
        returns the replies in submission order (flushing first if need be).

        A worker keeps a batch queued behind the one being computed, so the child never waits for the
        worker's broker round trip, and the worker never waits for the child to wake up.
        """
        if self._free and (stop - start) * 8 <= self._slot_bytes:
            slot = self._free.pop()
            self._mark_pending(slot)
            # Adjacent ranges in slots may be computed in one call of the algorithm (a worker's chunks mostly come in
            # order): one call's fixed cost for the lot. Not while a crash in a merged call is being narrowed down.
            merge = self._careful == 0
            self._queue(_REQUEST.pack(start, stop, slot | MERGE if merge else slot), slot, merge)
        else:
            self._queue(_REQUEST.pack(start, stop, -1), -1)

    def _mark_pending(self, slot: int) -> None:
        assert self._shm is not None
        _RECORD.pack_into(self._shm, slot * _RECORD.size, PENDING, 0)

    def _queue(self, wire: bytes, slot: int, merge: bool = False) -> None:
        if self._proc is None and self._finished_by_dead is None:  # (a dead child's ranges are still being read: later)
            self.restarts += 1
            self.start()
        self._pending.append(_Request(wire, slot, self._flushes + 1, merge))
        self._unsent += 1

    def flush(self) -> None:
        """Send the queued ranges, and the SYNC that the child answers once it has computed them all."""
        if not self._unsent or self._reader is None:  # nothing to send, or no child: sent to the next one
            return
        batch = itertools.islice(self._pending, len(self._pending) - self._unsent, None)
        try:
            _write_all(self._to_child, b"".join(r.wire for r in batch) + _REQUEST.pack(SYNC, 0, 0))
        except BrokenPipeError:  # the child was gone before it read any of these: they go to the next one
            return
        self._unsent = 0
        self._flushes += 1

    @property
    def pending(self) -> int:
        return len(self._pending)

    def result(self) -> np.ndarray:
        """The reply to the oldest submitted range (AlgorithmError, ComputeCrashed as for :meth:`evaluate`).

        When the child dies, the ranges it finished are still delivered in order; the first it did not finish is the
        one it was computing, and fails; the ranges queued behind it were never started and go to a new child unharmed.
        """
        if self._lent >= 0:
            self._free.append(self._lent)
            self._lent = -1
        if self._stranded:
            raise ComputeCrashed(self._stranded.pop(0))
        if not self._pending:
            raise RuntimeError("result() with no range submitted")
        self.flush()
        request = self._settled_head()
        if self._careful:
            self._careful -= 1
        if self._finished_by_dead == 0:  # the child died before it finished this range: this is the one that killed it
            self._pending.popleft()
            if request.slot >= 0:
                self._free.append(request.slot)
            how = self._dead_how
            self._restart_queued()
            raise ComputeCrashed(f"the compute process {how} while evaluating; a new one is started for the next chunk", how)
        if self._finished_by_dead is not None:
            self._finished_by_dead -= 1
        self._pending.popleft()
        return self._read(request)

    def _settled_head(self) -> _Request:
        """The oldest pending request, once its outcome is known: computed, or the one the child died in."""
        request = self._pending[0]
        self._wait_for(request)
        while self._finished_by_dead == 0 and (self._blame_unsure or self._died_idle):
            # The child died inside a merged call: send what it did not finish again, one call per range, so the
            # range that kills it is known; blaming the oldest would fail an innocent chunk. Or it died with nothing
            # of these in hand (killed while idle): they go to a new child, and nobody is blamed.
            self._restart_queued(unmerged=self._blame_unsure)
            if self._stranded:
                raise ComputeCrashed(self._stranded.pop(0))
            request = self._pending[0]
            self._wait_for(request)
        return request

    def _read(self, request: _Request) -> np.ndarray:
        """The values of a computed request (AlgorithmError when the algorithm raised for it)."""
        if request.slot < 0:
            status, payload = self._early.popleft()
            if status == RAISED:
                raise AlgorithmError(payload.decode(errors="replace"))
            return np.frombuffer(payload, dtype="<f8")
        assert self._shm is not None
        # Read after the SYNC, or after the child's exit: either orders the child's writes before these reads.
        status, length = _RECORD.unpack_from(self._shm, request.slot * _RECORD.size)
        offset = self._records_at + request.slot * self._slot_bytes
        if status == RAISED:
            self._free.append(request.slot)
            raise AlgorithmError(self._shm[offset : offset + length].decode(errors="replace"))
        self._lent = request.slot
        return np.frombuffer(self._shm, dtype="<f8", count=length // 8, offset=offset)

    def _wait_for(self, request: _Request) -> None:
        """Read the child's replies until ``request``'s outcome is there (or the child is gone)."""
        while self._reader is not None and (self._synced < request.batch if request.slot >= 0 else not self._early):
            # (a pipe reply heads _early when its range heads the queue: the older ones were read)
            reply = self._next_reply()
            if reply is not None and reply[0] != SYNCED:
                self._early.append(reply)  # a reply over the pipe, perhaps of a later range than the one awaited

    def _next_reply(self) -> tuple[int, bytearray] | None:
        """The next reply over the pipe (a SYNC is counted, and returned with no payload); None once the child is gone."""
        while self._reader is not None:
            header = self._reader.exactly(_REPLY.size)
            if header is None:
                break
            status, length = _REPLY.unpack(header)
            if status == SYNCED:
                self._synced += 1
                self.chunk_s = length / 1e9
                return SYNCED, bytearray()
            payload = self._reader.exactly(length)
            if payload is None:
                break
            return status, payload
        if self._reader is not None:
            self._reap()
        return None

    def _reap(self) -> None:
        """The child closed its end: it died. Note how, and settle its batches: what it wrote is all it will write."""
        proc, self._proc = self._proc, None
        code = proc.wait() if proc is not None else None
        self._close_fds()
        self._dead_how = describe_exit(code)
        self._synced = self._flushes  # its batches are settled: what it wrote is all there will be
        finished, replies = 0, len(self._early)
        for request in self._pending:  # the child works in order: it finished a prefix of what it was sent
            if request.slot >= 0:
                assert self._shm is not None
                done = _RECORD.unpack_from(self._shm, request.slot * _RECORD.size)[0] != PENDING
            else:
                done, replies = replies > 0, replies - 1
            if not done:
                break
            finished += 1
        self._finished_by_dead = finished
        self._died_idle = finished >= len(self._pending) - self._unsent  # it finished all it had read
        # The first unfinished range heads its group (what comes before it is finished): it was computed alone unless
        # the range after it was sent mergeable and adjacent.
        rest = list(self._pending)[finished : finished + 2]
        self._blame_unsure = len(rest) == 2 and rest[1].merge and rest[1].span[0] == rest[0].span[1]

    def _restart_queued(self, unmerged: bool = False) -> None:
        """Send the ranges queued behind a crash to a new child (they were never started); ``unmerged``: one call per
        range until they are all read."""
        queued, self._pending = list(self._pending), deque()
        self._early.clear()
        self._dead_how, self._finished_by_dead, self._blame_unsure, self._died_idle = "", None, False, False
        self._unsent = 0
        if unmerged:
            queued = [r.without_merge() for r in queued]
            self._careful = len(queued)
        if not queued:
            return
        try:
            for request in queued:  # (their records are still PENDING: the child never wrote them)
                self._queue(request.wire, request.slot, request.merge)
            self.flush()
        except AlgorithmError as e:  # the new child cannot start: each queued range fails in turn, with why
            self._pending.clear()
            self._unsent = 0
            self._free.extend(r.slot for r in queued if r.slot >= 0 and self._shm is not None)
            self._stranded = [f"no compute process could be started after a crash: {e}"] * len(queued)

    def _close_fds(self) -> None:
        if self._to_child >= 0:
            with contextlib.suppress(OSError):
                os.close(self._to_child)
        if self._reader is not None:
            with contextlib.suppress(OSError):
                os.close(self._reader.fd)
        self._to_child, self._reader = -1, None

    def kill(self) -> None:
        """SIGKILL the child (tests and the crash path); the next evaluation starts a new one."""
        if self._proc is not None:
            self._proc.kill()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def close(self) -> None:
        self._pending.clear()
        self._early.clear()
        self._stranded.clear()
        self._unsent = 0
        self._dead_how, self._finished_by_dead, self._blame_unsure, self._careful, self._died_idle = "", None, False, 0, False
        self._synced = self._flushes
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                _write_all(self._to_child, _EXIT)
        self._close_fds()
        if proc is not None:
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:  # stuck in a long evaluation: it has nothing we need
                proc.kill()
                proc.wait()
        if self._shm is not None:
            with contextlib.suppress(BufferError):  # a caller still holds a view of a slot: the mapping goes with it
                self._shm.close()
            os.close(self._shm_fd)
            self._shm, self._shm_fd = None, -1
            self._free, self._lent = [], -1


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
        self.first_slot = _records_bytes(nslots)
        self.fn, self.cost_us, self.sweep = fn, cost_us, sweep
        self.busy_ns = self.ranges = 0  # this batch's compute time and ranges, for the SYNC reply
        self.group: list[tuple[int, int, int]] = []  # adjacent mergeable ranges in slots (start, stop, slot): one call

    def serve(self, reader: _Reader) -> None:
        while True:
            header = reader.exactly(_REQUEST.size)
            if header is None:
                return  # the worker is gone
            start, stop, field = _REQUEST.unpack(header)
            t0 = time.perf_counter_ns()
            if start == SYNC:
                self.run_group()
                self.busy_ns += time.perf_counter_ns() - t0
                _write_all(self.rep, _REPLY.pack(SYNCED, self.busy_ns // max(self.ranges, 1)))
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
        if group and not (field & MERGE and start == group[-1][1] and stop - group[0][0] <= _MAX_MERGED):
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
            _write_all(self.rep, _REPLY.pack(RAISED, len(text)) + text)
            return
        data = memoryview(np.ascontiguousarray(values, dtype="<f8").data).cast("B")
        _write_header_and(self.rep, _REPLY.pack(OK, data.nbytes), data)

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
        _FIELD.pack_into(shm, slot * _RECORD.size + 8, length)
        _FIELD.pack_into(shm, slot * _RECORD.size, status)


def _serve(req: int, rep: int, shm: mmap.mmap | None, nslots: int, slot_bytes: int, algorithm: str, cost_us: float, grid: Sequence[str]) -> None:
    try:
        fn = algorithms.load(algorithm)
        sweep = SweepSpec.from_axes(tuple(grid)) if grid else None
    except Exception as e:  # anything the user's module raises on import is a load failure, said in one line
        text = (str(e) if isinstance(e, AlgorithmError) else f"cannot load algorithm {algorithm!r}: {type(e).__name__}: {e}").encode()
        _write_all(rep, _REPLY.pack(LOAD_FAILED, len(text)) + text)
        return
    _write_all(rep, _REPLY.pack(OK, 0))
    _Child(rep, shm, nslots, slot_bytes, fn, cost_us, sweep).serve(_Reader(req))


def main(argv: Sequence[str]) -> None:
    parent, req, rep, shm_fd, nslots, slot_bytes, algorithm, cost_us, *grid = argv
    _die_with_parent(int(parent))
    # Signals are the worker's business: it finishes the chunk this child is computing, then closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    n, size = int(nslots), int(slot_bytes)
    shm = mmap.mmap(int(shm_fd), _records_bytes(n) + n * size) if int(shm_fd) >= 0 else None
    _serve(int(req), int(rep), shm, n, size, algorithm, float(cost_us), grid)


if __name__ == "__main__":
    main(sys.argv[1:])
