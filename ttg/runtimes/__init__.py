"""Runtimes start, list, kill and stop worker processes; see :class:`Runtime`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WorkerLaunch:
    """What a runtime needs to start one worker: its id, its ``ttg worker`` arguments and its environment.

    Secrets (the broker URL with its password) travel in ``env``, never in ``args``: any local user can
    read a process's arguments (``ps``), only its owner its environment.
    """

    worker_id: str
    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


class Runtime(ABC):
    """Where workers run. The local runtime (processes) is the embedded default."""

    name: str

    @abstractmethod
    def start(self, launches: list[WorkerLaunch]) -> None:
        """Start one worker per launch; returns once they are spawned (not necessarily connected)."""

    @abstractmethod
    def alive(self) -> list[str]:
        """Ids of the workers still running."""

    @abstractmethod
    def kill(self, worker_id: str, sig: int) -> None:
        """Send ``sig`` to one worker."""

    @abstractmethod
    def exit_codes(self) -> dict[str, int | None]:
        """Exit status per worker (None while running; negative for a signal, as in subprocess)."""

    @abstractmethod
    def describe_failure(self, worker_id: str) -> str:
        """A short excerpt of a worker's log, for error messages."""

    @abstractmethod
    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every worker to exit by itself; True when none is left."""

    @abstractmethod
    def stop(self, grace_s: float) -> None:
        """Ask every worker to stop (SIGTERM), wait up to ``grace_s``, then kill what is left."""
