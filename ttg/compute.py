"""The compute child: the user's algorithm runs in a process of its own, never in the one that holds the broker.

Why: a worker's liveness (Redis claim heartbeats, RabbitMQ's heartbeat frames on pika's I/O thread)
must not depend on the algorithm. A C call that holds the GIL for seconds (a regex, a
non-releasing extension) starves every thread of the process it runs in, and the broker then
takes a live worker's chunks away, or drops its connection. So the worker forks nothing and runs
no user code: it starts ``python -m ttg.compute`` (the prefork pattern of Celery and Dramatiq,
one child per worker) and hands it ``(start, stop)`` ranges over a pipe; the child answers with
the float64 values, raw: in a shared-memory slot (a ``memfd`` both map) when the worker set slots up, over
another pipe otherwise. No pickle crosses the boundary. The slots spare the two copies and the system calls a
pipe costs per reply (measured: about a third of the child's overhead per 10,000-value chunk).

A child that dies (segfault, ``os._exit``, the OOM killer) fails that one evaluation with
:class:`ComputeCrashed`, naming the signal; the next evaluation starts a new child. The worker
stays connected throughout. The child dies with its worker (parent-death signal, and end of
file on its request pipe).

Wire format (little-endian): request ``<qqq`` (start, stop, slot; stop < 0 asks the child to exit; start < 0
means ``stop`` int64 parameter indices follow, for the verifier's samples, computed without ``cost_us``; slot
>= 0 asks for the values in that shared-memory slot, -1 on the reply pipe); reply ``<BQ`` (status, payload
length) then the payload: the values (status 0), an error text (status 1: the algorithm raised), or, once at
start-up, an empty "ready" (status 0) or a load error (status 2); status 3 says the values (payload length bytes)
are in the requested slot, and no payload follows.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import mmap
import os
import select
import signal
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from typing import NoReturn

import numpy as np

from ttg.errors import AlgorithmError, AlgorithmNotFound

log = logging.getLogger(__name__)

_REQUEST = struct.Struct("<qqq")
_REPLY = struct.Struct("<BQ")
OK, RAISED, LOAD_FAILED, IN_SLOT = 0, 1, 2, 3
_PIPE_BYTES = 1 << 20  # a chunk of 100,000 values fits in one pipe buffer: one wake-up per reply, not sixteen
SLOTS = 3  # shared-memory reply slots: a range gets one while at most SLOTS - 2 wait in the child (see ComputeProcess.submit)
_MAX_SLOT_BYTES = 16 << 20  # a chunk of more than 2M values goes through the pipe instead (SLOTS x this is mapped)


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


def _read_exactly(fd: int, n: int) -> bytearray | None:
    """``n`` bytes from ``fd``, or None at end of file (the other side is gone)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            return None
        got += k
    return buf


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


class ComputeProcess:
    """One compute child for one worker; :meth:`evaluate` is called from one thread (the worker's main thread)."""

    def __init__(self, algorithm: str, cost_us: float = 0.0, grid: Sequence[str] = (), slot_values: int = 0) -> None:
        """``slot_values``: the largest range the caller submits; > 0 sets up shared-memory reply slots that size, and
        then :meth:`result` returns a view of a slot, valid until the next call of :meth:`result` (copy it to keep it).
        """
        self.algorithm = algorithm
        self.cost_us = cost_us
        self.grid = tuple(grid)
        self._slot_bytes = slot_values * 8 if 0 < slot_values * 8 <= _MAX_SLOT_BYTES else 0
        self._shm_fd = -1
        self._shm: mmap.mmap | None = None
        self._seq = 0  # requests submitted, which picks each one's slot
        self._proc: subprocess.Popen[bytes] | None = None
        self._to_child = -1
        self._from_child = -1
        self._pending: deque[bytes] = deque()  # requests sent whose replies are not read yet, oldest first
        self._stranded: list[str] = []  # requests queued behind a crash for which no new child could start: their errors
        self.restarts = 0

    def start(self, timeout_s: float | None = None) -> None:
        """Start the child and wait until it has loaded the algorithm (AlgorithmNotFound when it cannot, or when the
        import takes more than ``timeout_s``; ComputeCrashed when the import killed the child)."""
        if self._slot_bytes and self._shm is None:
            # One mapping for the life of this object: a child started after a crash maps the same slots, so a range
            # queued behind the crash is resent unchanged.
            self._shm_fd = os.memfd_create("ttg-compute-slots", os.MFD_CLOEXEC)
            os.ftruncate(self._shm_fd, SLOTS * self._slot_bytes)
            self._shm = mmap.mmap(self._shm_fd, SLOTS * self._slot_bytes)
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        for fd in (req_w, rep_w):
            _widen(fd)
        shm = (str(self._shm_fd), str(self._slot_bytes)) if self._shm is not None else ("-1", "0")
        args = [sys.executable, "-m", "ttg.compute", str(os.getpid()), str(req_r), str(rep_w), *shm, self.algorithm, repr(self.cost_us), *self.grid]
        passed = (req_r, rep_w, self._shm_fd) if self._shm is not None else (req_r, rep_w)
        try:
            # From the worker's main thread, which lives as long as the worker: the child's parent-death signal is
            # tied to the thread that forked it.
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, pass_fds=passed)
        finally:
            os.close(req_r)
            os.close(rep_w)
        self._to_child, self._from_child = req_w, rep_r
        if timeout_s is not None and not select.select([rep_r], [], [], timeout_s)[0]:
            self.kill()
            self.close()
            raise AlgorithmNotFound(f"importing algorithm {self.algorithm!r} took more than {timeout_s:g} s; check what its module does when imported")
        status, _, payload = self._reply()
        if status == LOAD_FAILED:
            self.close()
            raise AlgorithmNotFound(payload.decode(errors="replace"))

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
        self._send(_REQUEST.pack(-1, len(idx), -1) + idx.tobytes())
        return self.result()

    def submit(self, start: int, stop: int) -> None:
        """Queue [start, stop) for the child; :meth:`result` returns the replies in submission order.

        A worker keeps one range queued behind the one being computed, so the child never waits for the
        worker's broker round trip, and the worker never waits for the child to wake up.
        """
        # A slot is reused SLOTS requests later. With at most SLOTS - 2 requests in the child, the slot of the values
        # :meth:`result` returned last is not written before the next call of :meth:`result`; past that, the pipe.
        fits = self._shm is not None and (stop - start) * 8 <= self._slot_bytes and len(self._pending) <= SLOTS - 2
        slot = self._seq % SLOTS if fits else -1
        self._seq += 1
        self._send(_REQUEST.pack(start, stop, slot))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _send(self, request: bytes) -> None:
        if self._proc is None:
            self.restarts += 1
            self.start()
        self._pending.append(request)
        with contextlib.suppress(BrokenPipeError):  # the child is gone; reading its reply says how
            _write_all(self._to_child, request)

    def result(self) -> np.ndarray:
        """The reply to the oldest submitted range (AlgorithmError, ComputeCrashed as for :meth:`evaluate`).

        When the child dies, the oldest range is the one it was computing: that one fails; the ranges queued
        behind it were never started and go to a new child unharmed.
        """
        if self._stranded:
            raise ComputeCrashed(self._stranded.pop(0))
        try:
            status, length, payload = self._reply()
        except ComputeCrashed:
            self._pending.popleft()
            queued, self._pending = list(self._pending), deque()
            try:
                for request in queued:
                    self._send(request)
            except AlgorithmError as e:  # the new child cannot start: each queued range fails in turn, with why
                self._stranded = [f"no compute process could be started after a crash: {e}"] * len(queued)
            raise
        request = self._pending.popleft()
        if status == RAISED:
            raise AlgorithmError(payload.decode(errors="replace"))
        if status == IN_SLOT:
            assert self._shm is not None
            slot = _REQUEST.unpack_from(request)[2]
            return np.frombuffer(self._shm, dtype="<f8", count=length // 8, offset=slot * self._slot_bytes)
        return np.frombuffer(payload, dtype="<f8")

    def _reply(self) -> tuple[int, int, bytearray]:
        """(status, payload length, payload): the payload is empty when the values are in a slot."""
        if self._from_child < 0:
            raise ComputeCrashed("no compute process is running")
        header = _read_exactly(self._from_child, _REPLY.size)
        if header is None:
            self._reap()
        status, length = _REPLY.unpack(header)
        if status == IN_SLOT:
            return status, length, bytearray()
        payload = _read_exactly(self._from_child, length)
        if payload is None:
            self._reap()
        return status, length, payload

    def _reap(self) -> NoReturn:
        """The child closed its end: it died. Raise what happened, after cleaning up."""
        proc, self._proc = self._proc, None
        code = proc.wait() if proc is not None else None
        self._close_fds()
        how = describe_exit(code)
        raise ComputeCrashed(f"the compute process {how} while evaluating; a new one is started for the next chunk", how)

    def _close_fds(self) -> None:
        for fd in (self._to_child, self._from_child):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._to_child = self._from_child = -1

    def kill(self) -> None:
        """SIGKILL the child (tests and the crash path); the next evaluation starts a new one."""
        if self._proc is not None:
            self._proc.kill()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def close(self) -> None:
        self._pending.clear()
        self._stranded.clear()
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                _write_all(self._to_child, _REQUEST.pack(0, -1, -1))
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


# -- the child ----------------------------------------------------------------------------------
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the worker died before the signal was set
        os._exit(1)


def _serve(req: int, rep: int, slots: mmap.mmap | None, slot_bytes: int, algorithm: str, cost_us: float, grid: Sequence[str]) -> None:
    from ttg import algorithms
    from ttg.sweep import SweepSpec

    try:
        fn = algorithms.load(algorithm)
        sweep = SweepSpec.from_axes(tuple(grid)) if grid else None
    except Exception as e:  # anything the user's module raises on import is a load failure, said in one line
        text = (str(e) if isinstance(e, AlgorithmError) else f"cannot load algorithm {algorithm!r}: {type(e).__name__}: {e}").encode()
        _write_all(rep, _REPLY.pack(LOAD_FAILED, len(text)) + text)
        return
    _write_all(rep, _REPLY.pack(OK, 0))
    while True:
        header = _read_exactly(req, _REQUEST.size)
        if header is None:
            return  # the worker is gone
        start, stop, slot = _REQUEST.unpack(header)
        if stop < 0:
            return
        indices = _read_exactly(req, stop * 8) if start < 0 else None
        if start < 0 and indices is None:
            return
        try:
            if indices is not None:
                idx = np.frombuffer(indices, dtype="<i8")
                values = algorithms.checked(algorithms.call(fn, idx, sweep), idx)
            else:
                values = algorithms.evaluate(fn, start, stop, cost_us, sweep)
        except Exception as e:  # the user's algorithm may raise anything: the worker retries or dead-letters the chunk
            text = f"{type(e).__name__}: {e}".encode()
            _write_all(rep, _REPLY.pack(RAISED, len(text)) + text)
            continue
        if slots is not None and slot >= 0 and values.nbytes <= slot_bytes:
            np.copyto(np.frombuffer(slots, dtype="<f8", count=len(values), offset=slot * slot_bytes), values)
            _write_all(rep, _REPLY.pack(IN_SLOT, values.nbytes))
            continue
        data = memoryview(np.ascontiguousarray(values, dtype="<f8").data).cast("B")
        _write_header_and(rep, _REPLY.pack(OK, data.nbytes), data)


def main(argv: Sequence[str]) -> None:
    parent, req, rep, shm_fd, slot_bytes, algorithm, cost_us, *grid = argv
    _die_with_parent(int(parent))
    # Signals are the worker's business: it finishes the chunk this child is computing, then closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    slots = mmap.mmap(int(shm_fd), SLOTS * int(slot_bytes)) if int(shm_fd) >= 0 else None
    _serve(int(req), int(rep), slots, int(slot_bytes), algorithm, float(cost_us), grid)


if __name__ == "__main__":
    main(sys.argv[1:])
