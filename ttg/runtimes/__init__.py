"""Runtimes start, list, kill and stop worker processes; see :class:`Runtime`."""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

# How a worker's exit status reads (ttg.worker's codes; a signal as subprocess gives it, negative, or as a container
# runtime reports a signalled PID 1, 128 + N).
_EXITS = {0: "after the run ended", 2: "a usage error", 3: "the broker stayed unreachable", 143: "stopped by SIGTERM before the run ended"}


def describe_exit(rc: int | None) -> str:
    """``rc`` in words, for evidence and error messages: "-9 (SIGKILL)", "143 (stopped by SIGTERM before the run ended)"."""
    if rc is None:
        return "still running"
    if rc in _EXITS:
        return f"{rc} ({_EXITS[rc]})"
    if rc < 0 or rc > 128:
        try:
            return f"{rc} ({signal.Signals(-rc if rc < 0 else rc - 128).name})"
        except ValueError:
            pass
    return str(rc)


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
    # Whether the workers live and die with this coordinator. Local worker processes are its children: an interrupted
    # coordinator stops them. Pods belong to their Job and outlive a coordinator pod: its replacement resumes with them.
    owns_workers: bool = True

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
        """Exit status per worker, as the runtime reports it (None while running): a local process killed by signal N
        reads -N, as in subprocess; a container, 128 + N, as its runtime reports it. Never assumed from the fault sent."""

    def consumer_key(self, worker_id: str) -> str:
        """What names this worker's broker consumers: ``ttg worker`` calls its consumer ``<worker id>.<pid>``, and a
        key matches a consumer of that exact name or one that starts with ``<key>.``. A pod's name is unique, so the
        worker id will do; a runtime that reuses worker ids for new processes must add the pid."""
        return worker_id

    @abstractmethod
    def describe_failure(self, worker_id: str) -> str:
        """A short excerpt of a worker's log, for error messages."""

    @abstractmethod
    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every worker to exit by itself; True when none is left."""

    @abstractmethod
    def stop(self, grace_s: float) -> None:
        """Ask every worker to stop (SIGTERM), wait up to ``grace_s``, then kill what is left."""
