"""Private broker processes: one per run or test, on a free port with its own data dir.

Never the system's broker: these can be killed, paused and restarted freely.
"""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from typing import Self


class PrivateServer(ABC):
    """What both private brokers offer: start, stop, kill(sig), restart on the same data; pause/resume; ``with``."""

    startup_s: float | None = None  # seconds from start() to ready, once started

    @property
    @abstractmethod
    def url(self) -> str: ...

    @property
    @abstractmethod
    def pid(self) -> int | None:
        """The server's process id (its process group's leader), None when it is not running."""

    @abstractmethod
    def start(self) -> Self: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the server (SIGKILL, SIGSTOP, SIGCONT ...)."""

    @abstractmethod
    def restart(self) -> None:
        """Start again on the same port and data directory (after a kill)."""

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing is answered."""
        self.kill(signal.SIGSTOP)

    def resume(self) -> None:
        self.kill(signal.SIGCONT)

    def state(self) -> str:
        """The kernel's one-letter state of the server process (R, S, T for stopped ...), '' when it is gone."""
        pid = self.pid
        if pid is None:
            return ""
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
