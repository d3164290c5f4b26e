"""Worker nemeses: signal one live worker (SIGKILL: a crash; SIGTERM: a graceful stop)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ttg.nemesis.base import Nemesis
from ttg.runtimes import Runtime

log = logging.getLogger(__name__)


class SignalWorker(Nemesis):
    """Send a signal to one live worker.

    ``last_result`` (worker id -> time of its latest result) steers the choice to
    the worker that has gone longest without a result: the one most surely
    mid-chunk. Without it, or on a tie, the first in start order.
    """

    def __init__(self, runtime: Runtime, sig: int, kind: str, last_result: Mapping[str, float] | None = None) -> None:
        self.runtime = runtime
        self.sig = sig
        self.kind = kind
        self.last_result = last_result or {}

    def inject(self) -> None:
        alive = self.runtime.alive()
        if not alive:
            raise RuntimeError("no live worker to signal")
        self.target = min(alive, key=lambda w: self.last_result.get(w, 0.0))
        log.info("injecting %s", self.kind, extra={"worker_id": self.target})
        self.runtime.kill(self.target, self.sig)
