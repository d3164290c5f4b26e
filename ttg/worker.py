"""The worker: take a chunk, evaluate it, hand the result back; repeat until the sweep is drained.

Queue mode reads tasks from the broker. Static mode (the earlier system's
Milestone 1, kept to show what the queue fixes) evaluates a fixed block of
chunks and publishes their results with no task queue, so a killed static
worker's remaining chunks are simply lost.

SIGTERM or SIGINT: finish the current chunk, give back any prefetched one, exit 0.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TypeVar

from ttg import algorithms
from ttg.broker import Broker, Delivery
from ttg.errors import BrokerUnavailable, MessageError
from ttg.messages import ResultMessage, decode_planned_task
from ttg.plan import ChunkPlan
from ttg.retry import patiently
from ttg.sweep import SweepSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

EXIT_OK = 0
EXIT_BROKER_LOST = 3


@dataclass(frozen=True)
class WorkerSpec:
    run_id: str
    worker_id: str
    plan: ChunkPlan  # the run's plan: every task is checked against it before it is computed
    algorithm: str = "demo"
    cost_us: float = 0.0
    broker_wait_s: float = 60.0  # how long to keep retrying an unreachable broker before giving up
    static: tuple[int, int] | None = None  # static mode: (block index, blocks): evaluate that block, no queue
    sweep: SweepSpec | None = None  # grid axes, for algorithms that take grid values
    poisoned: frozenset[int] = frozenset()  # the poison-chunk fault: these chunks fail on every delivery
    coordinator_pid: int | None = None  # the local coordinator that started this worker (its parent); None: none to watch
    successor_wait_s: float = 30.0  # once it is gone: how long to wait for a successor before exiting (0: at once)


class PoisonedChunk(Exception):
    """Raised in place of computing a chunk the poison-chunk fault poisoned."""


class Worker:
    def __init__(self, broker: Broker, spec: WorkerSpec) -> None:
        self.broker = broker
        self.spec = spec
        self.fn = algorithms.load(spec.algorithm)
        self.stopping = threading.Event()
        self.chunks_done = 0

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            if not self.stopping.is_set():
                log.info("draining", extra={"event": "draining", "signal": signal.Signals(signum).name})
            self.stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def watch_coordinator(self) -> None:
        """Exit once the coordinator that started this worker is gone (no orphans), after waiting for a successor.

        Its parent's pid is the only sign that survives a SIGKILL of the coordinator: the kernel reparents the worker.
        """
        pid = self.spec.coordinator_pid
        if pid is None:
            return

        def watch() -> None:
            while os.getppid() == pid:
                time.sleep(0.5)
            if self.spec.successor_wait_s <= 0:
                # The coordinator's private broker went with it: there is nothing to give back and nobody to serve.
                log.warning("coordinator (pid %d) is gone, and its private broker with it; exiting", pid, extra={"event": "exited"})
                os._exit(EXIT_BROKER_LOST)
            log.warning("coordinator (pid %d) is gone; serving its run for up to %gs more, for a successor (ttg run --resume)", pid, self.spec.successor_wait_s)
            time.sleep(self.spec.successor_wait_s)
            log.warning("no coordinator for %gs: giving the held chunks back and exiting", self.spec.successor_wait_s, extra={"event": "draining"})
            self.stopping.set()
            time.sleep(30.0)  # a drain stuck on an unreachable broker must not keep the process for ever
            os._exit(EXIT_BROKER_LOST)

        threading.Thread(target=watch, name="ttg-coordinator-watch", daemon=True).start()

    def run(self) -> int:
        log.info("worker started", extra={"event": "started", "mode": "static" if self.spec.static else "queue"})
        try:
            if self.spec.static is not None:
                self._run_static(*self.spec.static)
            else:
                self._run_queue()
        except BrokerUnavailable as e:
            log.error("giving up: %s", e, extra={"event": "exited"})
            return EXIT_BROKER_LOST
        finally:
            self.broker.close()
        log.info("worker exited", extra={"event": "exited", "chunks_done": self.chunks_done})
        return EXIT_OK

    def _run_queue(self) -> None:
        while not self.stopping.is_set():
            delivery = self._patiently(lambda: self.broker.receive(timeout_s=1.0))
            if delivery is None:
                if self._patiently(self.broker.drained):
                    log.info("sweep drained", extra={"event": "draining"})
                    return
                continue
            self._process(delivery)

    def _run_static(self, index: int, of: int) -> None:
        plan = self.spec.plan
        for chunk_id in plan.static_assignment(of, index):
            if self.stopping.is_set():
                return
            chunk = plan.chunk(chunk_id)
            values = algorithms.evaluate(self.fn, chunk.start, chunk.stop, self.spec.cost_us, self.spec.sweep)
            result = ResultMessage(self.spec.run_id, chunk.id, chunk.start, chunk.stop, self.spec.worker_id, 1, values.tobytes(), 0.0)
            self._patiently(functools.partial(self.broker.complete, None, chunk.id, result.encode()))
            self.chunks_done += 1

    def _process(self, delivery: Delivery) -> None:
        try:
            task = decode_planned_task(delivery.body, self.spec.run_id, self.spec.plan)
        except MessageError as e:
            # Not a task of this run's plan (junk, forged, another run's): out of the queue, never computed,
            # never counted as a chunk's death, whatever chunk id it claims.
            log.warning("message rejected: %s", e, extra={"event": "rejected"})
            reason = f"rejected: {e}"
            self._patiently(lambda: self.broker.reject(delivery, reason))
            return
        ctx = {"chunk_id": task.chunk_id, "deliveries": delivery.deliveries}
        log.debug("chunk taken", extra={"event": "taken", **ctx})
        t0 = time.perf_counter()
        try:
            if task.chunk_id in self.spec.poisoned:
                raise PoisonedChunk(f"chunk {task.chunk_id} is poisoned by the poison-chunk fault and fails on every delivery")
            values = algorithms.evaluate(self.fn, task.start, task.stop, self.spec.cost_us, self.spec.sweep)
        except Exception as e:  # the user's algorithm may raise anything; the chunk is retried or dead-lettered
            log.warning("chunk failed: %s: %s", type(e).__name__, e, extra={"event": "failed", **ctx}, exc_info=True)
            error = f"{type(e).__name__}: {e}"
            self._patiently(lambda: self.broker.fail(delivery, error, retry=True))
            return
        result = ResultMessage(
            task.run_id, task.chunk_id, task.start, task.stop, self.spec.worker_id, delivery.deliveries, values.tobytes(), time.perf_counter() - t0
        )
        self._patiently(functools.partial(self.broker.complete, delivery, task.chunk_id, result.encode()))
        self.chunks_done += 1
        # Per-chunk events at debug: a 10M sweep in chunks of 10 would otherwise write 2M lines.
        log.debug("chunk finished", extra={"event": "finished", **ctx})

    def _patiently(self, op: Callable[[], T]) -> T:
        return patiently(op, wait_s=self.spec.broker_wait_s)
