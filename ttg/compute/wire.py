"""The pipe and shared-memory protocol between a worker and its compute child (see :mod:`ttg.compute`)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import signal
import struct

log = logging.getLogger(__name__)

REQUEST = struct.Struct("<qqq")
REPLY = struct.Struct("<BQ")
OK, RAISED, LOAD_FAILED, SYNCED = 0, 1, 2, 3
PENDING = -1  # a slot record's status until the child has written the slot
INDICES, SYNC = -1, -2  # request kinds, in the start field
EXIT = REQUEST.pack(0, -1, -1)
PIPE_BYTES = 1 << 20  # a chunk of 100,000 values fits in one pipe buffer: one wake-up per reply, not sixteen
READ_AHEAD = 1 << 16  # small messages are read in pieces this big: many of them per system call
MAX_BATCH = 16  # ranges per batch: past this, a batch's two wake-ups are noise against its 16 results
MAX_SLOT_BYTES = 16 << 20  # a chunk of more than 2M values goes through the pipe instead
MAX_SHM_BYTES = 64 << 20  # all slots together: fewer (and smaller batches) for large chunks
MIN_SLOT_BYTES = 4096  # room for an error text however small the chunk
MERGE = 1 << 32  # in a request's slot field: the child may evaluate this range in one call with the one before it
MAX_MERGED = 1 << 14  # parameters in one merged call: past this, arrays outgrow the CPU cache and a call is slower per value
RECORD = struct.Struct("<qq")  # a slot's record: status, byte length
FIELD = struct.Struct("<q")


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_header_and(fd: int, header: bytes, data: memoryview) -> None:
    """``header`` then ``data`` in one system call where the pipe takes it all, with no copy into a joined buffer."""
    sent = os.writev(fd, [header, data])
    if sent < len(header):
        write_all(fd, header[sent:])
        sent = len(header)
    write_all(fd, data[sent - len(header) :])


class Reader:
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
            if n - got < READ_AHEAD:  # a small remainder: read ahead, keeping what follows for the next call
                piece = os.read(self.fd, READ_AHEAD)
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


def widen(fd: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # Linux only, and capped by /proc/sys/fs/pipe-max-size
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def records_bytes(slots: int) -> int:
    return -(-slots * 16 // mmap.PAGESIZE) * mmap.PAGESIZE
