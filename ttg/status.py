"""``ttg status``: what each run on a broker holds right now, and how fast it drains.

Each backend package has its own reader (``ttg.brokers.redis.status``,
``ttg.brokers.rabbitmq.status``), picked by URL scheme; both return
:class:`RunStatus`. Redis counts chunks; RabbitMQ counts task messages (a task
message carries up to 128 chunks), and the ``unit`` field says which.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ttg import backends


@dataclass(frozen=True)
class WorkerStatus:
    """One worker of a run as the broker sees it."""

    name: str
    done: int | None  # chunks it completed first (Redis counts them; None where the broker does not)
    inflight: int  # chunks (Redis) or task messages (RabbitMQ) it holds unacknowledged
    idle_s: float | None  # since the broker last heard from it (None: not known, or it has left the run)


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    unit: str  # "chunks" or "messages"
    queued: int  # waiting for a worker (retries included)
    inflight: int  # handed to a worker, not yet acknowledged
    consumers: int
    dead_lettered: int
    rejected: int
    ended: bool
    planned: int | None = None  # chunks in the plan, where the broker records it
    completed: int | None = None  # chunks completed, where the broker counts them
    workers: list[WorkerStatus] = field(default_factory=list)  # by name

    @property
    def remaining(self) -> int:
        return self.queued + self.inflight


def read_status(url: str, *, run_id: str | None = None, management_url: str | None = None) -> list[RunStatus]:
    """Every TTG run on the broker at ``url`` (or just ``run_id``), sorted by run id."""
    reader: Callable[..., list[RunStatus]] = backends.for_url(url).load("status_reader")
    runs = reader(url, management_url=management_url)
    return sorted((r for r in runs if run_id is None or r.run_id == run_id), key=lambda r: r.run_id)


@dataclass
class Rate:
    """Throughput and ETA of one run from successive snapshots (an exponential moving average of the drain rate)."""

    smoothing: float = 0.3
    per_s: float | None = None
    _last: tuple[float, int] | None = field(default=None, repr=False)

    def update(self, status: RunStatus, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        done = status.completed if status.completed is not None else -status.remaining
        if self._last is not None and now > self._last[0]:
            # Remaining work can grow (publishing, retries); only progress counts.
            rate = max(0.0, (done - self._last[1]) / (now - self._last[0]))
            self.per_s = rate if self.per_s is None else self.smoothing * rate + (1 - self.smoothing) * self.per_s
        self._last = (now, done)

    def eta_s(self, status: RunStatus) -> float | None:
        if status.remaining == 0:
            return 0.0
        if not self.per_s:
            return None
        return status.remaining / self.per_s
