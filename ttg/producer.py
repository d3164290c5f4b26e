"""The producer: a chunk plan becomes the run's task messages on the broker.

The coordinator publishes through here, and so do the tests that drive a broker by hand, so there is one way to
frame a plan. A resumed run skips what its ledger has already recorded; a chunk published twice is harmless (its
second result is dropped as a duplicate), a chunk never published is lost, so on doubt publish.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ttg.broker import Broker
from ttg.messages import TaskMessage
from ttg.plan import Chunk, ChunkPlan


def task_message(run_id: str, chunk: Chunk) -> bytes:
    """The encoded task of one chunk of run ``run_id``."""
    return TaskMessage(run_id, chunk.id, chunk.start, chunk.stop).encode()


def task_messages(run_id: str, plan: ChunkPlan, seen: np.ndarray | None = None) -> Iterator[tuple[int, bytes]]:
    """(chunk id, encoded task) for every chunk of ``plan`` not marked in ``seen`` (a ledger's per-chunk flags)."""
    for c in plan:
        if seen is None or not seen[c.id]:
            yield c.id, task_message(run_id, c)


def unrecorded(plan: ChunkPlan, seen: np.ndarray | None = None) -> list[range]:
    """The ids of ``plan``'s chunks that ``seen`` (a ledger's per-chunk flags) does not mark, as runs of consecutive ids."""
    if seen is None:
        return [range(plan.chunks)]
    todo = np.asarray(seen[: plan.chunks]) == 0  # a byte a chunk: a 10^8-chunk plan's ids would take 800 MB
    if todo.all():
        return [range(plan.chunks)]
    # Where a run of unrecorded ids starts (+1) and where it ends (-1), in pairs.
    edges = np.flatnonzero(np.diff(todo.view(np.int8), prepend=np.int8(0), append=np.int8(0)))
    return [range(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def publish_plan(broker: Broker, plan: ChunkPlan, seen: np.ndarray | None = None) -> int:
    """Publish the chunks of ``plan`` that ``seen`` does not mark as recorded, as tasks of ``broker``'s run; returns
    how many."""
    return broker.publish_plan(plan, unrecorded(plan, seen))
