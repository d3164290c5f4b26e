"""Nemeses: faults injected into a running sweep, all with one interface (inject / heal).

The same classes serve ``ttg run --fault``, pytest fixtures and (later) Chaos
Toolkit actions. :class:`FaultSchedule` fires each fault at its progress point
and records when it happened and how long the sweep took to recover.
"""

from __future__ import annotations

import logging
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ttg.faults import FaultSpec
from ttg.runtimes import Runtime

log = logging.getLogger(__name__)


class Nemesis(ABC):
    kind: str
    target: str = ""

    @abstractmethod
    def inject(self) -> None: ...

    def heal(self) -> None:  # noqa: B027 - optional hook: a kill has nothing to undo, a pause does
        """Undo the fault. A kill cannot be undone: the run's survivors take over."""

    def __enter__(self) -> Nemesis:
        self.inject()
        return self

    def __exit__(self, *exc: object) -> None:
        self.heal()


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


def nemesis_for(spec: FaultSpec, runtime: Runtime, last_result: Mapping[str, float] | None = None) -> Nemesis:
    if spec.kind == "kill-worker":
        return SignalWorker(runtime, signal.SIGKILL, spec.kind, last_result)
    if spec.kind == "terminate-worker":
        return SignalWorker(runtime, signal.SIGTERM, spec.kind, last_result)
    raise ValueError(f"no nemesis for fault kind {spec.kind!r}")  # parse_fault admits only known kinds


@dataclass
class FaultRecord:
    kind: str
    target: str
    at_s: float
    at_chunks: int
    recovered_s: float | None = None
    note: str = ""
    fired_at: float = float("inf")  # monotonic; inf when the fault could not be injected

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "at_s": round(self.at_s, 3),
            "at_chunks": self.at_chunks,
            "recovered_s": None if self.recovered_s is None else round(self.recovered_s, 3),
            "note": self.note,
        }


class FaultSchedule:
    """Fires faults at progress points and measures recovery.

    Recovery of a worker fault = time from the fault to the first result that
    needed another delivery (the orphaned chunk, completed by a survivor).
    """

    def __init__(self, specs: tuple[FaultSpec, ...], runtime: Runtime, chunks: int, started: float, last_result: Mapping[str, float]) -> None:
        self.pending = sorted(specs, key=lambda s: s.at_fraction)
        self.runtime = runtime
        self.chunks = chunks
        self.started = started
        self.last_result = last_result
        self.records: list[FaultRecord] = []
        self._due_at: float | None = None

    def poll(self, chunks_done: int, redelivered_at: list[float]) -> None:
        now = time.monotonic()
        while self.pending and chunks_done >= self.pending[0].at_fraction * self.chunks:
            # Results arrive the moment a worker finishes a chunk, so firing at once would hit
            # workers between chunks; half a chunk later, every busy worker is mid-chunk.
            if self._due_at is None:
                workers = max(1, len(self.runtime.alive()))
                per_chunk = (now - self.started) * workers / max(1, chunks_done)
                self._due_at = now + min(1.0, per_chunk / 2)
            if now < self._due_at:
                break
            self._due_at = None
            self._fire(self.pending.pop(0), chunks_done)
        for rec in self.records:
            if rec.recovered_s is None and not rec.note:
                later = [t for t in redelivered_at if t >= rec.fired_at]
                if later:
                    rec.recovered_s = min(later) - rec.fired_at

    def _fire(self, spec: FaultSpec, chunks_done: int) -> None:
        nemesis = nemesis_for(spec, self.runtime, self.last_result)
        now = time.monotonic()
        try:
            nemesis.inject()
        except RuntimeError as e:
            self.records.append(FaultRecord(spec.kind, "", now - self.started, chunks_done, note=f"not injected: {e}"))
            return
        self.records.append(FaultRecord(spec.kind, nemesis.target, now - self.started, chunks_done, fired_at=now))

    def wait_s(self, default: float) -> float:
        """How long the collector may block before the next due fault needs it."""
        if self._due_at is None:
            return default
        return max(0.0, min(default, self._due_at - time.monotonic()))

    def finish(self) -> None:
        for rec in self.records:
            if rec.recovered_s is None and not rec.note:
                if rec.at_chunks >= self.chunks:
                    rec.note = "fired after every chunk was done: nothing to recover (use a larger sweep or --cost-us)"
                else:
                    rec.note = "no redelivered chunk seen after the fault (the worker held none, or its chunks were never recovered)"
