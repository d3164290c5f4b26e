"""The collect phase of a run: read results into the ledger, track progress, fire faults, decide when it is over.

The ledger is the result store and nothing else; what the fault schedule and the record need to know about the
sweep as it goes (when each worker last delivered, which results needed a redelivery, the progress timeline) is
the :class:`Tracker`'s, fed with each result the ledger accepted as its chunk's first.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ttg.broker import Broker
from ttg.config import RunConfig
from ttg.ledger import Ledger
from ttg.memory import MemoryPeaks
from ttg.messages import Outcome
from ttg.nemesis import BrokerServer, FaultProxy, FaultSchedule
from ttg.retry import patiently
from ttg.runtimes import Runtime, describe_exit

log = logging.getLogger(__name__)
T = TypeVar("T")
BROKER_WAIT_S = 60.0  # how long the coordinator rides out an unreachable broker
READ_BYTES = 8 << 20  # result values one read of results may hold
EXITS_EVERY_S = 0.05  # how often the coordinator looks for workers that exited (a waitpid each, or the pod watch's cache)


@dataclass(frozen=True)
class Progress:
    chunks_done: int
    chunks_total: int
    params_done: int
    elapsed_s: float


ProgressFn = Callable[[Progress], None]


class Tracker:
    """What the sweep looks like as it goes: per-worker delivery times, redeliveries, the progress timeline."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.timeline: list[list[float]] = [[0.0, 0]]  # (seconds since t0, chunks completed), at most every 0.1 s
        self.redelivered_at: list[float] = []  # monotonic times of first results that needed more than one delivery
        self.last_result: dict[str, float] = {}  # worker id -> monotonic time of its latest first result
        self.results_by_worker: dict[str, float] = {}  # worker id -> first results received from it
        # Seconds from a worker having a chunk's values to the coordinator recording them (the hosts' clocks).
        self.lags = array("d")  # 8 bytes a chunk, not a Python float object

    def note(self, msg: Outcome) -> None:
        """One result the ledger recorded as its chunk's first."""
        now = time.monotonic()
        if msg.finished_at is not None:
            self.lags.append(time.time() - msg.finished_at)
        self.last_result[msg.worker_id] = now
        self.results_by_worker[msg.worker_id] = self.results_by_worker.get(msg.worker_id, 0) + 1
        if msg.deliveries > 1:
            self.redelivered_at.append(now)

    def lag_summary(self) -> dict[str, float]:
        """p50, p99 and max recording lag in seconds, and how many results had one; {} when none did."""
        if not self.lags:
            return {}
        lags = np.asarray(self.lags)
        p50, p99 = np.percentile(lags, [50, 99])
        return {"p50": round(float(p50), 4), "p99": round(float(p99), 4), "max": round(float(lags.max()), 4), "n": len(lags)}

    def tick(self, now: float, done: int, chunks: int) -> None:
        elapsed = now - self.t0
        last_at, last_done = self.timeline[-1]
        if done != last_done and (elapsed - last_at >= 0.1 or done == chunks):
            self.timeline.append([round(elapsed, 3), done])


class Collector:
    """The result loop of one run; the clock (``t0``) starts when it is made, just before the plan is published."""

    def __init__(
        self,
        cfg: RunConfig,
        broker: Broker,
        runtime: Runtime,
        ledger: Ledger,
        on_progress: ProgressFn | None,
        server: BrokerServer | None = None,
        proxies: Mapping[str, FaultProxy] | None = None,
        cancel: threading.Event | None = None,
        own_process: bool = False,
    ) -> None:
        self.cfg, self.broker, self.runtime, self.ledger, self.on_progress = cfg, broker, runtime, ledger, on_progress
        self.cancel = cancel or threading.Event()
        self._workers_gone_at: float | None = None
        self._released: set[str] = set()  # workers whose exit was seen and whose chunks were handed on
        self.cpu_s = 0.0  # the coordinator process's CPU time (every thread) while it collected
        self.memory = MemoryPeaks()  # sampled as it collects, and by the record once the run is judged
        self.t0 = time.monotonic()
        self.tracker = Tracker(self.t0)
        rng = random.Random(cfg.seed)  # seeded: a random fault target replays with the run's --seed
        # Queue mode: hit the worker longest without a result (surely mid-chunk). Static mode: the one with the most of
        # its block left, at once; a static sweep with no work per parameter is over in a few tens of milliseconds.
        static = cfg.mode == "static"
        priority = self.tracker.results_by_worker if static else self.tracker.last_result
        self.faults = FaultSchedule(
            cfg.faults,
            runtime,
            ledger.plan.chunks,
            self.t0,
            priority,
            server,
            proxies,
            rng,
            immediate=static,
            run=(broker, ledger.plan),
            own_process=own_process,
        )

    def run(self) -> None:
        """Collect until every planned chunk id is completed or dead (never on a count of messages), or give up."""
        cpu0 = time.process_time()
        try:
            self._collect()
        finally:
            self.cpu_s = time.process_time() - cpu0

    def _collect(self) -> None:
        chunks = self.ledger.plan.chunks
        dead_seen = 0
        next_stats = next_exits = next_memory = 0.0
        # A read holds its results in memory until they are recorded: bound it in bytes, not only in results, so the
        # coordinator's heap stays flat in N (at 100M parameters in chunks of 10,000, 512 results were 40 MB a read).
        per_read = max(1, min(512, READ_BYTES // (8 * self.ledger.plan.chunk_size)))
        next_flush = time.monotonic() + 2.0
        while True:
            raws = self._patiently(lambda: self.broker.read_results(max_count=per_read, timeout_s=self.faults.wait_s(0.1)))
            for raw in raws:
                msg = self.ledger.add(raw)
                if msg is not None:
                    self.tracker.note(msg)
            for chunk_id, task in self.ledger.take_reopens():  # a genuine receipt whose values were gone: compute it again
                if not self._patiently(functools.partial(self.broker.reopen, chunk_id, task)):
                    self.ledger.not_reopened(chunk_id)
            now = time.monotonic()
            self._progress(now)
            self.faults.poll(self.ledger.completed, self.tracker.redelivered_at)
            if now >= next_exits:
                self._release_exited()
                next_exits = now + EXITS_EVERY_S
            if now >= next_stats:  # a dead letter ends a chunk too; ask the broker a few times a second
                dead_seen = self._note_dead_letters(dead_seen)
                next_stats = now + 0.25
            if now >= next_memory:
                self.memory.sample()
                next_memory = now + 0.1
            if now >= next_flush:  # a successor coordinator (--resume) finds on disk what this one recorded
                self.ledger.flush()
                next_flush = now + 2.0
            if self.ledger.accounted >= chunks or self._give_up(now, bool(raws)):
                return

    def _give_up(self, now: float, got_results: bool) -> bool:
        """Whether to stop with chunks outstanding: every worker gone (after taking what was in flight), cancelled, timed out."""
        outstanding = self.ledger.plan.chunks - self.ledger.accounted
        # Pods are replaced by their Job seconds after one ends: only the run's --timeout ends a run without them.
        if self.runtime.owns_workers and not self.runtime.alive():
            self._workers_gone_at = self._workers_gone_at or now
            if not got_results and now - self._workers_gone_at > 0.5:
                log.warning("all workers exited with %d chunk(s) outstanding", outstanding)
                return True
        if self.cancel.is_set():
            log.warning("run cancelled with %d chunk(s) outstanding", outstanding)
            return True
        if now - self.t0 > self.cfg.timeout_s:
            log.error("run timed out after %.0fs with %d chunk(s) outstanding", self.cfg.timeout_s, outstanding)
            return True
        return False

    def _release_exited(self) -> None:
        """Hand the chunks of each worker whose process has exited to the live workers, once per worker.

        A worker that exited holds nothing it can still complete, so this never makes a duplicate; the broker's
        reclaim bound stays for a worker that is alive but cut off."""
        for worker_id, rc in self.runtime.exit_codes().items():
            if rc is None or worker_id in self._released:
                continue
            self._released.add(worker_id)
            n = self._patiently(functools.partial(self.broker.release_exited, self.runtime.consumer_key(worker_id)))
            if n:
                log.info("worker %s exited (%s) holding %d task message(s): handed to the live workers", worker_id, describe_exit(rc), n)

    def _note_dead_letters(self, seen: int) -> int:
        """Re-read the dead letters when the broker's count of them changed; returns the count read."""
        count = self._patiently(self.broker.stats).dead_lettered
        if count != seen:
            self.ledger.note_dead_letters(self._patiently(self.broker.dead_letters))
        return count

    def _patiently(self, op: Callable[[], T]) -> T:
        # A broker restart (with --persistence nothing is lost) must not end the run.
        return patiently(op, wait_s=BROKER_WAIT_S)

    def _progress(self, now: float) -> None:
        done, chunks = self.ledger.completed, self.ledger.plan.chunks
        self.tracker.tick(now, done, chunks)
        if self.on_progress:
            params_done = min(done * self.ledger.plan.chunk_size, self.ledger.plan.params)
            self.on_progress(Progress(done, chunks, params_done, now - self.t0))
