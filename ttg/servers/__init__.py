"""Private broker processes: one per run or test, on a free port with its own data dir.

Never the system's broker: these can be killed, paused and restarted freely.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self, TypeVar

T = TypeVar("T")
# The kernel's parent-death signal (PR_SET_PDEATHSIG) fires when the *thread* that forked the child exits, not the
# process (prctl(2)). Brokers are started and restarted from whatever thread needs them (a fault's heal timer, a
# Chaos Toolkit sweep thread), so every start happens on this one thread, which lives as long as the process.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ttg-spawner")


def on_spawner_thread(start: Callable[[], T]) -> T:
    """Run ``start`` (which forks a private server) on the process-lifetime spawner thread."""
    if threading.current_thread().name.startswith("ttg-spawner"):
        return start()
    return _SPAWNER.submit(start).result()


def dies_with_us(command: list[str]) -> list[str]:
    """``command`` under ``setpriv --pdeathsig KILL``: a coordinator SIGKILLed takes its private broker with it.

    setpriv (util-linux) sets the signal and execs the command, so the pid is the server's own. Without
    setpriv the server could outlive a SIGKILLed coordinator; clean exits stop it either way.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *command] if setpriv else command


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600, also when the file existed): a server's secrets."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


class PrivateServer(ABC):
    """What both private brokers offer: start, stop, kill(sig), restart on the same data; pause/resume; ``with``."""

    startup_s: float | None = None  # seconds from start() to ready, once started

    @classmethod
    @abstractmethod
    def for_run(cls, *, persistence: bool, status: bool = False) -> Self:
        """A server for one run; ``persistence``: whatever it confirmed survives a SIGKILL and restart; ``status``:
        ``ttg status`` can read it (RabbitMQ's management plugin, which a node boots faster without)."""

    @classmethod
    @abstractmethod
    def version(cls) -> str:
        """The version of the server binary this machine's private brokers run ("not found" when there is none)."""

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

    @abstractmethod
    def cut_clients(self) -> str:
        """Close every client connection with the backend's own command (the one the Kubernetes partition runs in
        the broker's pod); returns what the command said."""

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
