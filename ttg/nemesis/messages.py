"""Message nemeses: what an attacker with access to the broker could put in a run's task queue.

``junk-messages`` publishes bodies that are not tasks (not msgpack, msgpack of the wrong shape, a
task of another run), each framed with a *real* chunk id of the plan; ``forged-task`` publishes
well-formed tasks of the run whose range is another chunk's. Both go through the run's own
:class:`~ttg.broker.Broker`, so they are framed exactly as the coordinator frames the plan (Redis
stream fields, RabbitMQ headers). A run that holds must reject every one, count it, and end with
every chunk computed from its own range: none is lost, none is dead, none is recorded twice.
"""

from __future__ import annotations

import logging
import random

import msgpack

from ttg.broker import Broker
from ttg.errors import FaultNotInjected
from ttg.faults import FaultSpec
from ttg.messages import TaskMessage
from ttg.nemesis.base import FaultContext, Nemesis
from ttg.plan import ChunkPlan

log = logging.getLogger(__name__)
DEFAULT_COUNT = 10


class ForgeMessages(Nemesis):
    """Publish ``count`` junk or forged task messages naming planned chunk ids. Evidence: how many were
    published, and how many the workers had rejected by the time the fault was judged."""

    kinds = ("junk-messages", "forged-task")

    @classmethod
    def for_fault(cls, spec: FaultSpec, ctx: FaultContext) -> ForgeMessages:
        if ctx.run is None:
            raise FaultNotInjected(f"{spec.kind} needs the run's broker connection")
        broker, plan = ctx.run
        return cls(spec.kind, broker, plan, broker.run_id, int(spec.target or DEFAULT_COUNT), ctx.rng)

    def __init__(self, kind: str, broker: Broker, plan: ChunkPlan, run_id: str, count: int = DEFAULT_COUNT, rng: random.Random | None = None) -> None:
        self.kind, self.broker, self.plan, self.run_id, self.count = kind, broker, plan, run_id, count
        self.rng = rng or random.Random(0)
        self._published = 0
        self._rejected_before = 0

    def _bodies(self) -> list[tuple[int, bytes]]:
        chunks = [self.rng.randrange(self.plan.chunks) for _ in range(self.count)]
        if self.kind == "forged-task":
            # The range of another chunk (or of nothing, past the plan's end), under this chunk's id.
            out = []
            for c in chunks:
                other = self.plan.chunk((c + 1 + self.rng.randrange(max(1, self.plan.chunks - 1))) % self.plan.chunks)
                start, stop = (other.start, other.stop) if other.id != c else (self.plan.params, self.plan.params + 1)
                out.append((c, TaskMessage(self.run_id, c, start, stop).encode()))
            return out
        return [(c, self._junk(i, c)) for i, c in enumerate(chunks)]

    def _junk(self, i: int, c: int) -> bytes:
        """The i-th junk body, naming chunk ``c``: four shapes in turn."""
        if i % 4 == 0:
            return b"\xc1 not msgpack"
        if i % 4 == 1:
            return bytes(msgpack.packb([1, 2, 3]))
        if i % 4 == 2:
            return bytes(msgpack.packb({"v": 99, "run_id": self.run_id, "chunk_id": c}))
        chunk = self.plan.chunk(c)
        return TaskMessage("another-run", c, chunk.start, chunk.stop).encode()

    def inject(self) -> None:
        self._rejected_before = self.broker.stats().rejected
        bodies = self._bodies()
        self.target = f"{len(bodies)} message(s) naming chunks {', '.join(str(c) for c, _ in bodies[:5])}{' ...' if len(bodies) > 5 else ''}"
        log.info("injecting %s: %s", self.kind, self.target)
        self._published = self.broker.publish_tasks(bodies)

    def evidence(self) -> str:
        if not self._published:
            return ""
        try:
            rejected = self.broker.stats().rejected - self._rejected_before
        except Exception:  # the run's broker is closed or down: what was published still shows the fault happened
            return f"{self._published} {self.kind} message(s) published"
        return f"{self._published} {self.kind} message(s) published, {rejected} rejected by the workers"
