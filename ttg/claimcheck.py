"""The claim check: workers that share the coordinator's disk put a chunk's values in a file, and send a receipt.

With a cheap algorithm the result values are nearly all a broker carries (80 MB per 10M parameters), and RabbitMQ
moves them through several copies in Erlang. Local workers instead append each chunk's values to a file of their own
in the run's staging directory and send only a :class:`~ttg.messages.ReceiptMessage` through the broker: where the
values are, their CRC-32, and an HMAC of the receipt under the run's key.

Why it is safe:

* The key is a file in the run directory (0600), which the coordinator and its workers share and the broker never
  sees: a receipt forged by anyone with access to the broker alone fails its MAC and is rejected, and the staging
  files are never opened for it.
* The staging files are append-only (``O_APPEND``): values a receipt names are never overwritten, whether the chunk
  is computed again (a redelivery), a worker of the same id is respawned, or a successor coordinator's workers
  serve the run.
* The coordinator reads values with ``pread`` (never a mapping, which a truncated file would turn into SIGBUS), only
  for a chunk's first receipt, and checks their CRC before counting the chunk: a short or altered file is a rejected
  result, never a wrong value in the ledger.
* Verification stays independent: the verdict recomputes values from the algorithm, not from any checksum here.

No fsync: the values survive a worker's or the coordinator's crash (they are in the page cache of the same host), not
the host's. A receipt that outlives its values (a broker with AOF, a host crash) is rejected and its chunk counted
lost: the verdict is never wrong, only unlucky. Workers that share no disk with the coordinator (Kubernetes pods)
send their values inline, as before (``--results-via broker``).
"""

from __future__ import annotations

import errno
import hmac
import os
import re
import secrets
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttg.errors import ConfigError, MessageError
from ttg.messages import MAC_BYTES, ReceiptMessage

STAGING = "staging"  # the directory in the run directory
KEY_FILE = "receipt.key"
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # a worker id that may name a file there


class ValuesUnreadable(MessageError):
    """A receipt signed with the run's key whose values cannot be read back whole and unchanged: its worker did send the
    chunk, so the chunk is computed again rather than lost (:meth:`ttg.broker.Broker.reopen`)."""


@dataclass(frozen=True)
class Staging:
    """A run's staging directory and the key its receipts are signed with."""

    directory: Path
    key: bytes

    @classmethod
    def create(cls, run_dir: Path) -> Staging:
        """The run's staging directory (0700) and key (0600), made once: a resumed run keeps its predecessor's key,
        so the receipts its workers left on the broker still check."""
        directory = run_dir / STAGING
        directory.mkdir(mode=0o700, exist_ok=True)
        path = directory / KEY_FILE
        if not path.exists():
            # Written whole under another name, then linked into place: a coordinator killed half way leaves no empty
            # key for its successor to choke on, and of two racing, the first link wins and both read its key.
            tmp = directory / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return cls.open(directory)

    @classmethod
    def open(cls, directory: Path) -> Staging:
        """A worker's view of the coordinator's staging directory; ConfigError when its key cannot be read."""
        try:
            key = bytes.fromhex((directory / KEY_FILE).read_text().strip())
        except (OSError, ValueError) as e:
            raise ConfigError(f"--staging {directory}: cannot read its {KEY_FILE} ({e}); pass the staging directory its coordinator created") from None
        if len(key) != 32:
            raise ConfigError(
                f"--staging {directory}: {KEY_FILE} holds a key of {len(key)} bytes, not 32; it is not one TTG wrote (remove the run with "
                "ttg runs delete, or the staging directory to send values through the broker)"
            )
        return cls(directory, key)

    def file_for(self, worker_id: str) -> Path:
        if not _FILE_NAME.fullmatch(worker_id):
            raise MessageError(f"worker id {worker_id!r:.60} cannot name a staging file (letters, digits, '_', '.', '-'; 128 at most)")
        return self.directory / f"{worker_id}.f8"

    def mac(self, r: ReceiptMessage) -> bytes:
        """The HMAC of what a receipt vouches for: whose values, of which chunk, where, with which CRC, and the figures
        the record keeps of it (deliveries, compute time, finishing time: a forger must not skew those either)."""
        return self.sign(r.run_id, r.chunk_id, r.start, r.stop, r.worker_id, r.deliveries, r.offset, r.crc, r.compute_s, r.finished_at)

    def sign(
        self,
        run_id: str,
        chunk_id: int,
        start: int,
        stop: int,
        worker_id: str,
        deliveries: int,
        offset: int,
        crc: int,
        compute_s: float,
        finished_at: float | None,
    ) -> bytes:
        # Plain names and decimal integers, NUL-separated; floats as Python floats by repr, which round-trips a float64
        # exactly (an int 0 or a numpy float would sign differently from what msgpack hands the coordinator).
        end = "-" if finished_at is None else repr(float(finished_at))
        signed = f"{run_id}\0{chunk_id}\0{start}\0{stop}\0{worker_id}\0{deliveries}\0{offset}\0{crc}\0{float(compute_s)!r}\0{end}"
        return hmac.digest(self.key, signed.encode(), "sha256")[:MAC_BYTES]


def _open_regular(path: Path, flags: int) -> int:
    """Open ``path`` only as a regular file: a symlink planted there is refused (O_NOFOLLOW), and a FIFO or device does
    not block the open (O_NONBLOCK) and is refused after it."""
    fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path.name} is not a regular file")
    return fd


class Writer:
    """A worker's side: append values to its staging file and make the receipt for them."""

    def __init__(self, staging: Staging, run_id: str, worker_id: str) -> None:
        self.staging, self.run_id, self.worker_id = staging, run_id, worker_id
        try:
            self.fd = _open_regular(staging.file_for(worker_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        except (MessageError, OSError) as e:
            raise ConfigError(f"--staging {staging.directory}: worker {worker_id!r:.60} cannot append to a staging file there ({e})") from None

    def receipt(self, chunk_id: int, start: int, stop: int, deliveries: int, values: memoryview, compute_s: float, finished_at: float) -> ReceiptMessage:
        """Append ``values`` (the chunk's float64 bytes) and return their signed receipt; OSError (a full disk) when they
        could not be written whole: the caller sends them inline instead."""
        n = values.nbytes
        written = os.write(self.fd, values)
        end = os.lseek(self.fd, 0, os.SEEK_CUR)  # this process's own file position: past what it just appended
        if written != n:  # a short append (no space): never name values that are not all there
            raise OSError(errno.ENOSPC, f"staging file took {written} of {n} bytes")
        offset, crc = end - n, zlib.crc32(values)
        mac = self.staging.sign(self.run_id, chunk_id, start, stop, self.worker_id, deliveries, offset, crc, compute_s, finished_at)
        return ReceiptMessage(self.run_id, chunk_id, start, stop, self.worker_id, deliveries, offset, crc, mac, compute_s, finished_at)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Reader:
    """The coordinator's side: check a receipt and read the values it names into the ledger's array."""

    def __init__(self, staging: Staging) -> None:
        self.staging = staging
        self._fds: dict[str, int] = {}

    def read_into(self, r: ReceiptMessage, out: np.ndarray) -> None:
        """Fill ``out`` (the chunk's slice of the results) with the values ``r`` names, or raise MessageError saying why
        not; ``out`` is then left as NaN (unrecorded)."""
        if not hmac.compare_digest(r.mac, self.staging.mac(r)):
            raise MessageError(f"receipt for chunk {r.chunk_id} from {r.worker_id!r:.60} is not signed with this run's key")
        buf = out.data.cast("B")
        try:
            got = os.preadv(self._fd(r.worker_id), [buf], r.offset)
        except OSError as e:
            why = f"cannot read {r.worker_id}'s staging file ({e.strerror or e})"
        else:
            if got == buf.nbytes and zlib.crc32(buf) == r.crc:
                return
            what = f"holds {got} of its {buf.nbytes} bytes" if got != buf.nbytes else "does not match its CRC"
            why = f"the staging file of {r.worker_id} at offset {r.offset} {what}"
        out[:] = np.nan  # nothing of it is recorded
        self._forget(r.worker_id)  # the file may have been replaced: the chunk computed again is read from the new one
        raise ValuesUnreadable(f"receipt for chunk {r.chunk_id}: {why}")

    def _fd(self, worker_id: str) -> int:
        fd = self._fds.get(worker_id)
        if fd is None:
            fd = _open_regular(self.staging.file_for(worker_id), os.O_RDONLY)
            self._fds[worker_id] = fd
        return fd

    def _forget(self, worker_id: str) -> None:
        fd = self._fds.pop(worker_id, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
