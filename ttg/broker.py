"""The one broker interface every backend implements, and the backend registry.

The worker sees only :meth:`Broker.receive`, :meth:`Broker.complete` and
:meth:`Broker.fail`. Redelivery of a crashed worker's chunk, claim heartbeats,
retry delays and dead-lettering live *inside* each adapter, so no caller ever
asks which backend it has.

Every key, stream or queue a backend creates is scoped by run id: one broker can
host several sweeps at once, and :meth:`Broker.delete_run` removes one run's
state only. Nothing ever flushes a broker.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ttg import backends

if TYPE_CHECKING:  # not at run time: `import ttg` (every worker's compute child) must not load numpy and msgpack
    from ttg.plan import ChunkPlan


@dataclass(frozen=True)
class Delivery:
    """One task message handed to a worker.

    ``deliveries`` counts how often the broker has handed this message out,
    this time included (1 on the first delivery). ``token`` is the backend's
    own handle (a stream entry id, a delivery tag); callers pass it back untouched.
    """

    body: bytes
    deliveries: int
    token: Any


@dataclass(frozen=True)
class DeadLetter:
    """A task the broker gave up on, with the reason and the task message itself.

    ``chunk_id`` is what the broker's framing says (None when it says nothing readable); it is
    only a claim: the coordinator counts a chunk as dead only when ``body`` is a task of this run
    whose range matches the plan for that chunk id (see :meth:`ttg.ledger.Ledger.note_dead_letters`).
    """

    chunk_id: int | None
    reason: str
    deliveries: int
    body: bytes = b""


@dataclass(frozen=True)
class BrokerStats:
    """A snapshot of one run's queues, for progress views and readiness checks."""

    published: int
    completed: int
    queued: int
    inflight: int
    consumers: int
    dead_lettered: int
    rejected: int
    duplicates: int  # the repeated completions the broker noticed (Redis); the verdict counts the ledger's own


class Broker(ABC):
    """A run-scoped task queue with a results channel and a dead-letter channel.

    Guarantees every backend must give (the shared contract suite checks them):

    * A published task is delivered until it is completed or dead-lettered; a
      worker that dies holding it does not lose it (it is redelivered to another
      worker within the backend's reclaim bound).
    * :meth:`complete` records the result and acknowledges the task so that a
      crash between the two gives at worst a duplicate, never a loss. Every
      result reaches the results channel, a second one for a chunk id too: the
      coordinator's ledger drops and counts duplicates (a broker may count those
      it noticed in :attr:`BrokerStats.duplicates`, for progress views only).
    * A task delivered ``max_deliveries`` times without completing, or failed
      with ``retry=False``, goes to the dead-letter channel with its reason.
    * A message that is not a task of this run's plan is :meth:`reject`-ed: it goes to
      the rejected channel, is counted there, and never counts as a chunk's death.
    * One coordinator per run: :meth:`claim` takes the run's lease, which lapses when
      that coordinator dies (Redis: a key with a TTL it refreshes; RabbitMQ: an
      exclusive queue, gone with its connection).
    """

    run_id: str

    # -- the run's lease ----------------------------------------------------
    @abstractmethod
    def claim(self, owner: str, *, wait_s: float = 0.0) -> None:
        """Become the run's one live coordinator, or raise :class:`~ttg.errors.RunConflict` naming the holder.

        ``owner`` says who (``host/pid/nonce``). A lease held by a dead process on this host is
        taken over at once; otherwise wait up to ``wait_s`` for the holder's lease to lapse.
        """

    @abstractmethod
    def release(self) -> None:
        """Give the lease back (only if this broker object holds it). Safe to call twice."""

    @abstractmethod
    def has_state(self) -> bool:
        """Whether the run has anything on the broker besides its lease (it was started before)."""

    # -- coordinator side ---------------------------------------------------
    @abstractmethod
    def declare(self, chunks: int, *, workers: int = 1) -> None:
        """Create this run's topology idempotently and record the planned chunk count, and how many workers will share
        the chunks (a backend that packs several chunks into a message sizes its messages by the workers and by how
        many chunks each publish carries)."""

    @abstractmethod
    def publish_tasks(self, tasks: Iterable[tuple[int, bytes]]) -> int:
        """Publish ``(chunk_id, encoded task)`` pairs durably; returns how many were published."""

    def publish_plan(self, plan: ChunkPlan, ids: Iterable[range]) -> int:
        """Publish the tasks of ``plan``'s chunks whose ids are in ``ids`` (runs of consecutive ids); returns how many.

        The base encodes each task here (:class:`ttg.messages.TaskMessage`); a backend whose server can build them
        from the run's :class:`ttg.messages.TaskFrame` (Redis) overrides it, so publishing a plan costs the
        coordinator a command per block of chunks, not one per chunk."""
        from ttg.messages import TaskMessage

        return self.publish_tasks((c.id, TaskMessage(self.run_id, c.id, c.start, c.stop).encode()) for r in ids for c in map(plan.chunk, r))

    @abstractmethod
    def read_results(self, max_count: int, timeout_s: float) -> list[bytes]:
        """Take about ``max_count`` encoded results (a batch is never split), in arrival order.

        Blocks for at most ``timeout_s``; returns an empty list when nothing came.
        What one call returns is removed from the broker by the *next* call (or stays there
        if the caller dies first): the caller records results before asking for more, so a
        coordinator that crashes in between loses nothing; a successor reads them again.
        """

    @abstractmethod
    def dead_letters(self) -> list[DeadLetter]:
        """Every message of this run that was dead-lettered, oldest first."""

    @abstractmethod
    def rejections(self) -> list[DeadLetter]:
        """Every message of this run the workers rejected as not a task of the plan, oldest first, with its reason."""

    @abstractmethod
    def stats(self) -> BrokerStats:
        """Counters for this run."""

    def release_exited(self, worker_key: str) -> int:
        """Hand what an exited worker held to the live workers now; returns how many task messages that was.

        The coordinator calls it as soon as its runtime sees a worker's process exit (a local child's exit status, a
        pod's terminated container), so a crashed worker's chunks are redelivered at once instead of after the
        reclaim bound, which stays for a worker that is alive but cut off. ``worker_key`` is
        :meth:`ttg.runtimes.Runtime.consumer_key`: the worker's consumer name, or the prefix its names start with
        (``KEY.``). Only for workers that have exited: a live one would lose its chunks to a duplicate computation.
        The base does nothing: a broker that redelivers when the connection closes (RabbitMQ) needs no help.
        """
        return 0

    def reopen(self, chunk_id: int, task: bytes) -> bool:
        """Put ``chunk_id``'s task back in the queue after its completion was acknowledged but its result could not be
        recorded (a claim check whose values were gone: see :mod:`ttg.claimcheck`), so the chunk is computed again
        instead of lost; returns whether a task was put back. A broker that remembers completed chunk ids (Redis)
        forgets this one, so its counts stay those of the chunks, and puts a task back only for a chunk it had marked
        completed: a second unreadable copy of one receipt, or a retry after a lost reply, adds no second task."""
        self.publish_tasks([(chunk_id, task)])
        return True

    @abstractmethod
    def end_run(self) -> None:
        """Tell this run's workers the sweep is over, complete or not: :meth:`drained` turns True for them.

        The coordinator calls it once it stops collecting, so workers on any
        runtime can exit by themselves (pods do; local workers are also signalled).
        """

    @abstractmethod
    def delete_run(self) -> None:
        """Remove every key, stream or queue of this run, and nothing else."""

    # -- worker side --------------------------------------------------------
    @abstractmethod
    def receive(self, timeout_s: float) -> Delivery | None:
        """Block for at most ``timeout_s`` for the next task; returns None when nothing came.

        ``timeout_s`` 0 asks for what is at hand: a task already fetched, or None at once. A worker asks so while it
        still has chunks to finish; the next fetch then rides on a completion's round trip instead of costing one.
        """

    @abstractmethod
    def complete(self, delivery: Delivery | None, chunk_id: int, result: bytes) -> None:
        """Record ``result`` for ``chunk_id`` and acknowledge ``delivery`` atomically.

        ``delivery`` is None in static mode, where no task was queued. A backend
        may hold completions briefly to send several in one round trip; they are
        sent at the latest on the next :meth:`receive`, :meth:`drained` or
        :meth:`close`, and a completion lost with a crashed worker leaves its
        task pending, so it is redelivered, never lost.
        """

    @abstractmethod
    def fail(self, delivery: Delivery, reason: str, *, retry: bool) -> None:
        """Give a task back after an error.

        With ``retry`` the task is delivered again after a delay, unless it has
        used up its deliveries, in which case it is dead-lettered; without
        ``retry`` (the message is unreadable) it is dead-lettered at once.
        """

    @abstractmethod
    def reject(self, delivery: Delivery, reason: str) -> None:
        """Take a message that is not a task of this run's plan out of the queue, into the rejected channel.

        Unlike :meth:`fail`, a rejected message never counts as a chunk's death, whatever chunk id
        its framing claims: junk that names a real chunk must not end that chunk early.
        """

    @abstractmethod
    def drained(self) -> bool:
        """True once the coordinator has ended the run; a worker in burst mode then exits.

        Sends any completions held back first. The coordinator ends a run when
        every chunk is completed or dead-lettered, or when it gives up; workers
        never judge that themselves (a RabbitMQ worker cannot see the others' acks).
        """

    @abstractmethod
    def close(self) -> None:
        """Release held deliveries and connections. Safe to call twice."""

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_broker_url(url: str) -> None:
    """ConfigError naming --broker-url when the backend's driver cannot read ``url`` (a port that is not a number,
    an unknown or malformed query option); nothing is connected to."""
    backends.for_url(url).load("url_check")(url)


def open_broker(
    url: str, run_id: str, *, consumer: str | None = None, max_deliveries: int = 3, reclaim_after_s: float = 3.0, prefetch: int | None = None
) -> Broker:
    """Open the backend that handles ``url``'s scheme for run ``run_id``.

    ``consumer`` names the worker (None for the coordinator). ``prefetch`` caps
    what a worker holds ahead of its computation (None: the backend's default).
    """
    cls = backends.for_url(url).load("broker")
    options: dict[str, Any] = {"consumer": consumer, "max_deliveries": max_deliveries, "reclaim_after_s": reclaim_after_s}
    if prefetch is not None:
        options["prefetch"] = prefetch
    broker: Broker = cls(url, run_id, **options)
    return broker
