"""The worker's side of the compute child: :class:`ComputeProcess` submits ranges in batches and reads their values."""

from __future__ import annotations

import contextlib
import itertools
import logging
import mmap
import os
import select
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ttg.compute.wire import (
    EXIT,
    INDICES,
    LOAD_FAILED,
    MAX_BATCH,
    MAX_SHM_BYTES,
    MAX_SLOT_BYTES,
    MERGE,
    MIN_SLOT_BYTES,
    PENDING,
    RAISED,
    RECORD,
    REPLY,
    REQUEST,
    SYNC,
    SYNCED,
    Reader,
    describe_exit,
    records_bytes,
    widen,
    write_all,
)
from ttg.errors import AlgorithmError, AlgorithmNotFound

log = logging.getLogger(__name__)


class ComputeCrashed(AlgorithmError):
    """The compute child died while evaluating a range (a crash of the algorithm, or a kill)."""

    def __init__(self, message: str, how: str = "") -> None:
        super().__init__(message)
        self.how = how  # how the child ended ("killed by SIGSEGV"), when it was seen to end


class _Request(NamedTuple):
    wire: bytes  # what is sent
    slot: int  # where the values come back; -1: over the reply pipe
    batch: int  # the flush that sends it: its SYNC says the slot's record is written
    merge: bool = False  # sent with MERGE: if the child died in it, it may have died in a neighbour's range

    @property
    def span(self) -> tuple[int, int]:
        start, stop, _ = REQUEST.unpack_from(self.wire)
        return start, stop

    def without_merge(self) -> _Request:
        return self._replace(wire=REQUEST.pack(*self.span, self.slot), merge=False) if self.merge else self


class ComputeProcess:
    """One compute child for one worker; used from one thread (the worker's main thread)."""

    def __init__(self, algorithm: str, cost_us: float = 0.0, grid: Sequence[str] = (), slot_values: int = 0) -> None:
        """``slot_values``: the largest range the caller submits; > 0 sets up shared-memory reply slots that size, and
        then :meth:`result` returns a view of a slot, valid until the next call of :meth:`result` (copy it to keep it).
        """
        self.algorithm = algorithm
        self.cost_us = cost_us
        self.grid = tuple(grid)
        slot_bytes = max(MIN_SLOT_BYTES, slot_values * 8)
        fits = 0 < slot_values * 8 <= MAX_SLOT_BYTES
        self._slot_bytes = slot_bytes if fits else 0
        # Two batches in flight and the slot of the last values handed out; fewer when slots are large.
        self._nslots = max(3, min(2 * MAX_BATCH + 1, MAX_SHM_BYTES // slot_bytes)) if fits else 0
        self._shm_fd = -1
        self._shm: mmap.mmap | None = None
        self._records_at = 0  # where the slots begin in the mapping (the records come first)
        self._free: list[int] = []  # slots no request and no handed-out view uses; reused last-in first-out
        self._lent = -1  # the slot of the values result() returned last: free again at the next result()
        self._proc: subprocess.Popen[bytes] | None = None
        self._to_child = -1
        self._reader: Reader | None = None
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
            self._records_at = records_bytes(self._nslots)
            size = self._records_at + self._nslots * self._slot_bytes
            os.ftruncate(self._shm_fd, size)
            self._shm = mmap.mmap(self._shm_fd, size)
            self._free = list(range(self._nslots - 1, -1, -1))
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        for fd in (req_w, rep_w):
            widen(fd)
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
        self._to_child, self._reader = req_w, Reader(rep_r)
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
        self._queue(REQUEST.pack(INDICES, len(idx), -1) + idx.tobytes(), -1)
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
            self._queue(REQUEST.pack(start, stop, slot | MERGE if merge else slot), slot, merge)
        else:
            self._queue(REQUEST.pack(start, stop, -1), -1)

    def _mark_pending(self, slot: int) -> None:
        assert self._shm is not None
        RECORD.pack_into(self._shm, slot * RECORD.size, PENDING, 0)

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
            write_all(self._to_child, b"".join(r.wire for r in batch) + REQUEST.pack(SYNC, 0, 0))
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
        status, length = RECORD.unpack_from(self._shm, request.slot * RECORD.size)
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
            header = self._reader.exactly(REPLY.size)
            if header is None:
                break
            status, length = REPLY.unpack(header)
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
                done = RECORD.unpack_from(self._shm, request.slot * RECORD.size)[0] != PENDING
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

    def __enter__(self) -> ComputeProcess:
        return self  # not started: start() takes the import timeout, and a caller may change settings first

    def __exit__(self, *exc: object) -> None:
        self.close()

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
                write_all(self._to_child, EXIT)
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
