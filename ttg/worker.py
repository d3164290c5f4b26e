"""The worker: take a chunk, evaluate it, hand the result back; repeat until the sweep is drained.

Queue mode reads tasks from the broker. Static mode (the earlier system's
Milestone 1, kept to show what the queue fixes) evaluates a fixed block of
chunks and publishes their results with no task queue, so a killed static
worker's remaining chunks are simply lost.

SIGTERM or SIGINT: finish the current chunk, give back any prefetched one, and exit 0 if the coordinator has ended
the run by then, else 128 + the signal (143 for SIGTERM). Only the end marker makes a worker exit 0: on Kubernetes a
pod whose worker exits 0 counts as a success of the worker Job, and one success stops the Job from replacing any pod
(https://kubernetes.io/docs/concepts/workloads/controllers/job/#parallel-jobs), so a worker stopped mid-run must fail,
with a code the Job's podFailurePolicy recognises as "replace me, no backoff spent".
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import NamedTuple, TypeVar

from ttg.broker import Broker, Delivery
from ttg.claimcheck import Staging, Writer
from ttg.compute import MAX_BATCH, ComputeProcess
from ttg.errors import AlgorithmError, BrokerUnavailable, MessageError
from ttg.messages import ResultMessage, TaskMessage, decode_planned_task
from ttg.plan import ChunkPlan
from ttg.retry import patiently

log = logging.getLogger(__name__)
T = TypeVar("T")

EXIT_OK = 0  # the coordinator ended the run (queue mode), or this worker's block is done (static mode)
EXIT_BROKER_LOST = 3
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143: stopped by SIGTERM before the run ended (the shell's convention)


@dataclass(frozen=True)
class WorkerSpec:
    run_id: str
    worker_id: str
    plan: ChunkPlan  # the run's plan: every task is checked against it before it is computed
    algorithm: str = "demo"
    cost_us: float = 0.0
    broker_wait_s: float = 60.0  # how long to keep retrying an unreachable broker before giving up
    static: tuple[int, int] | None = None  # static mode: (block index, blocks): evaluate that block, no queue
    grid: tuple[str, ...] = ()  # NAME=VALUES axes, for algorithms that take grid values
    poisoned: frozenset[int] = frozenset()  # the poison-chunk fault: these chunks fail on every delivery
    coordinator_pid: int | None = None  # the local coordinator that started this worker (its parent); None: none to watch
    successor_wait_s: float = 30.0  # once it is gone: how long to wait for a successor before exiting (0: at once)
    staging: Staging | None = None  # the coordinator's staging directory, shared: values go there, receipts to the broker


class _Started(NamedTuple):
    """A task handed to the compute child, whose result is not read yet."""

    delivery: Delivery
    task: TaskMessage
    t0: float


# An idle worker waits for work in slices this long, so a SIGTERM (which interrupts no blocking read) is acted on
# within one: at the end of a run the coordinator stops its workers so, and waits for them.
IDLE_SLICE_S = 0.2
BATCH_TARGET_S = 0.02  # a batch's compute time: results reach the coordinator in bursts no longer than this


class PoisonedChunk(AlgorithmError):
    """Raised in place of computing a chunk the poison-chunk fault poisoned."""


class Worker:
    def __init__(self, broker: Broker, spec: WorkerSpec) -> None:
        self.broker = broker
        self.spec = spec
        # A staging file that cannot be opened is a usage error, found before any child process exists.
        self.claims = None if spec.staging is None else Writer(spec.staging, spec.run_id, spec.worker_id)
        # The algorithm runs in a child process: nothing it does can starve this process's heartbeat.
        # Its values come back in shared-memory slots of a chunk's size: only the result message copies them.
        self.compute = ComputeProcess(spec.algorithm, spec.cost_us, spec.grid, slot_values=spec.plan.chunk_size)
        self.compute.start()  # an algorithm that cannot be loaded is a usage error, before the broker is reached
        self.stopping = threading.Event()
        self.signalled: int | None = None  # the signal that asked this worker to stop, if one did
        self.ended = False  # it saw the coordinator's end marker (the run may be deleted from the broker right after)
        self.chunks_done = 0
        self._said_draining = False

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            # Flags only: a log line written from here could re-enter a write the main thread is in the middle of
            # (the coordinator signals every local worker at a run's end). The main loop says "draining".
            self.signalled = self.signalled or signum
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
            while self._coordinator_alive():
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
                done = self._run_static(*self.spec.static)
            else:
                self._run_queue()
                done = self._run_ended()
        except BrokerUnavailable as e:
            log.error("giving up: %s", e, extra={"event": "exited"})
            return EXIT_BROKER_LOST
        finally:
            self.broker.close()
            self.compute.close()
            if self.claims is not None:
                self.claims.close()
        self._draining()
        # Stopped before the end by no signal: the coordinator that started it is gone and no successor came.
        code = EXIT_OK if done else 128 + self.signalled if self.signalled is not None else EXIT_BROKER_LOST
        log.info("worker exited", extra={"event": "exited", "chunks_done": self.chunks_done, "exit_code": code})
        return code

    def _run_ended(self) -> bool:
        """Whether the coordinator has ended the run (asked once, briefly: a drain on SIGTERM must not hang here)."""
        if self.ended:
            return True
        try:
            return patiently(self.broker.drained, wait_s=min(5.0, self.spec.broker_wait_s))
        except BrokerUnavailable:
            return False

    def _run_queue(self) -> None:
        """Keep two batches of chunks in the compute child: the next batch is computed there while this process
        sends the previous one's results, so neither side waits for the other. A batch is what the broker has ready
        (up to what the child computes in BATCH_TARGET_S), sent in one write and answered in one reply: the child's
        wake-ups are paid per batch, not per chunk. On SIGTERM, finish those, take no more."""
        batches: deque[list[_Started]] = deque()
        while not self.stopping.is_set():
            if len(batches) < 2:
                batch = self._start_batch(timeout_s=0.0 if batches else 1.0)
                if batch:
                    batches.append(batch)
                    continue
                if not batches:  # nothing in the child: the sweep may be over (None: nothing came at all)
                    if batch is None and self._patiently(self.broker.drained):
                        self.ended = True
                        log.info("sweep drained", extra={"event": "draining"})
                        return
                    continue
            # Two batches in the child, or nothing more ready this instant (on RabbitMQ the next message comes only
            # after an ack): finish the oldest and look again. Once the run has ended the broker keeps saying None,
            # and the pipeline empties.
            self._finish_batch(batches.popleft())
        self._draining()
        while batches:
            self._finish_batch(batches.popleft())

    def _draining(self) -> None:
        """Say once that a signal asked this worker to stop, as its main loop sees it."""
        if self.signalled is not None and not self._said_draining:
            self._said_draining = True
            log.info("draining", extra={"event": "draining", "signal": signal.Signals(self.signalled).name})

    def _finish_batch(self, batch: list[_Started]) -> None:
        for started in batch:
            self._finish(started)

    def _batch_size(self) -> int:
        """Chunks to send the child at once: as many as it computes in BATCH_TARGET_S (one until it has said how
        long a chunk takes), at most MAX_BATCH, and no more than two batches of its reply slots hold."""
        per_chunk = self.compute.chunk_s
        fits = max(1, self.compute.capacity // 2)
        wanted = 1 if per_chunk is None else int(BATCH_TARGET_S / max(per_chunk, 1e-6))
        return max(1, min(MAX_BATCH, fits, wanted))

    def _start_batch(self, timeout_s: float) -> list[_Started] | None:
        """Take what the broker has ready (waiting ``timeout_s`` for the first) and send it to the child as one batch;
        None when nothing came."""
        size = self._batch_size()
        batch: list[_Started] = []
        received = False
        while len(batch) < size and not (received and self.stopping.is_set()):
            delivery = self._receive(0.0 if received else timeout_s)
            if delivery is None:
                break
            received = True
            started = self._start(delivery)
            if started is not None:
                batch.append(started)
        if batch:
            self.compute.flush()
        return batch if received else None

    def _receive(self, timeout_s: float) -> Delivery | None:
        """The broker's next delivery within ``timeout_s``, waited for in slices: None at once after a signal."""
        deadline = time.monotonic() + timeout_s
        while True:
            asked = time.monotonic()
            wait = min(IDLE_SLICE_S, max(0.0, deadline - asked))
            delivery = self._patiently(lambda: self.broker.receive(timeout_s=wait))  # noqa: B023  (called at once)
            now = time.monotonic()
            # A None long before the slice is up: the broker has nothing more to hand out (the run has ended); asking
            # again at once would spin until the deadline.
            if delivery is not None or self.stopping.is_set() or now >= deadline or now - asked < wait / 2:
                return delivery

    def _run_static(self, index: int, of: int) -> bool:
        """Evaluate and publish the block; whether all of it was done (False: stopped by a signal part way)."""
        plan = self.spec.plan
        for chunk_id in plan.static_assignment(of, index):
            if self.stopping.is_set():
                return False  # run() says "draining"
            chunk = plan.chunk(chunk_id)
            values = self.compute.evaluate(chunk.start, chunk.stop)
            result = self._outcome(TaskMessage(self.spec.run_id, chunk.id, chunk.start, chunk.stop), 1, values.data.cast("B"), 0.0)
            self._patiently(functools.partial(self.broker.complete, None, chunk.id, result))
            self.chunks_done += 1
        return True

    def _start(self, delivery: Delivery) -> _Started | None:
        """Check the task against the plan and hand it to the compute child; None when it was rejected or failed."""
        try:
            task = decode_planned_task(delivery.body, self.spec.run_id, self.spec.plan)
        except MessageError as e:
            # Not a task of this run's plan (junk, forged, another run's): out of the queue, never computed,
            # never counted as a chunk's death, whatever chunk id it claims.
            log.warning("message rejected: %s", e, extra={"event": "rejected"})
            reason = f"rejected: {e}"
            self._patiently(lambda: self.broker.reject(delivery, reason))
            return None
        log.debug("chunk taken", extra={"event": "taken", "chunk_id": task.chunk_id, "deliveries": delivery.deliveries})
        if task.chunk_id in self.spec.poisoned:
            self._failed(delivery, task, PoisonedChunk(f"chunk {task.chunk_id} is poisoned by the poison-chunk fault and fails on every delivery"))
            return None
        try:
            self.compute.submit(task.start, task.stop)
        except AlgorithmError as e:  # no compute child could be started for it: retried or dead-lettered, never a crash
            self._failed(delivery, task, e)
            return None
        return _Started(delivery, task, time.perf_counter())

    def _failed(self, delivery: Delivery, task: TaskMessage, e: AlgorithmError) -> None:
        """The algorithm raised, or its process died: the chunk is retried or dead-lettered."""
        error = str(e)  # the child says what the algorithm raised ("ValueError: ...") or how the child died
        log.warning("chunk failed: %s", error, extra={"event": "failed", "chunk_id": task.chunk_id, "deliveries": delivery.deliveries})
        self._patiently(lambda: self.broker.fail(delivery, error, retry=True))

    def _finish(self, started: _Started) -> None:
        delivery, task, t0 = started
        try:
            values = self.compute.result()
        except AlgorithmError as e:
            self._failed(delivery, task, e)
            return
        ctx = {"chunk_id": task.chunk_id, "deliveries": delivery.deliveries}
        result = self._outcome(task, delivery.deliveries, values.data.cast("B"), time.perf_counter() - t0)
        self._patiently(functools.partial(self.broker.complete, delivery, task.chunk_id, result))
        self.chunks_done += 1
        # Per-chunk events at debug: a 10M sweep in chunks of 10 would otherwise write 2M lines.
        log.debug("chunk finished", extra={"event": "finished", **ctx})

    def _outcome(self, task: TaskMessage, deliveries: int, values: memoryview, compute_s: float) -> bytes:
        """The encoded message that completes ``task``: a receipt for values put in the staging directory, or, without
        one (or when it cannot take them: a full disk), the values themselves."""
        if self.claims is not None:
            try:
                return self.claims.receipt(task.chunk_id, task.start, task.stop, deliveries, values, compute_s, time.time()).encode()
            except OSError as e:
                log.warning("staging file refused chunk %d (%s); sending its values through the broker", task.chunk_id, e)
        result = ResultMessage(task.run_id, task.chunk_id, task.start, task.stop, self.spec.worker_id, deliveries, values, compute_s, time.time())
        return result.encode()

    def _patiently(self, op: Callable[[], T]) -> T:
        """``op``, retried while the broker is unreachable: for ``broker_wait_s``, or for as long as the coordinator that
        started this worker lives and has not asked it to stop. That coordinator decides when the broker is lost (it
        ends the run, or stops its workers); a worker that gave up on its own would leave the run with nobody to
        finish it (soak seed 8056: RabbitMQ left a retry publish unconfirmed for a minute after a broker restart,
        and the last worker exited with two chunks held)."""
        while True:
            try:
                return patiently(op, wait_s=self.spec.broker_wait_s)
            except BrokerUnavailable as e:
                if not self._coordinator_alive() or self.stopping.is_set():
                    raise
                log.warning("broker still unreachable after %gs; retrying while the coordinator lives: %s", self.spec.broker_wait_s, e)

    def _coordinator_alive(self) -> bool:
        return self.spec.coordinator_pid is not None and os.getppid() == self.spec.coordinator_pid
