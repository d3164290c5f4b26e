"""Worker nemeses: signal some live workers (SIGKILL: a crash; SIGTERM: a graceful stop), and the selector that picks them."""

from __future__ import annotations

import logging
import random
import signal
from collections.abc import Collection, Mapping

from ttg.errors import FaultNotInjected
from ttg.faults import KINDS, FaultSpec, targets_count
from ttg.nemesis.base import FaultContext, Nemesis
from ttg.runtimes import Runtime, describe_exit

log = logging.getLogger(__name__)


def select_workers(target: str | None, alive: list[str], last_result: Mapping[str, float], rng: random.Random) -> list[str]:
    """The workers ``target`` names among ``alive`` (see :mod:`ttg.faults` for the forms).

    Counted selections take the workers with the lowest ``last_result`` first: by default the
    time of each one's latest result, so the ones longest without one, most surely mid-chunk
    (static mode passes result counts instead: the ones with the most work left). ``random`` draws from ``rng`` so a
    seeded run (and ``ttg chaos fuzz --seed``) replays the same choice.
    """
    if not alive:
        raise FaultNotInjected("no live worker to hit")
    if target == "random":
        return [rng.choice(sorted(alive))]
    count = targets_count(target, len(alive))
    if count is None:
        if target not in alive:
            raise FaultNotInjected(f"worker {target} is not running (live: {', '.join(alive)})")
        return [target]
    return sorted(alive, key=lambda w: last_result.get(w, 0.0))[: min(count, len(alive))]


class SignalWorker(Nemesis):
    """Send a signal to the selected live workers. Evidence: their exit statuses, once they have exited."""

    kinds = ("kill-worker", "terminate-worker", "kill-pod", "terminate-pod")  # the pod faults: by the pod's name

    def __init__(
        self,
        runtime: Runtime,
        sig: int,
        kind: str,
        last_result: Mapping[str, float] | None = None,
        target: str | None = None,
        rng: random.Random | None = None,
        spared: Collection[str] = (),
    ) -> None:
        self.runtime = runtime
        self.spared = frozenset(spared)  # workers an earlier fault already hit: never picked again
        self.sig = sig
        self.kind = kind
        self.last_result = last_result or {}
        self.selector = target
        self.rng = rng or random.Random(0)
        self.targets: list[str] = []

    @classmethod
    def for_fault(cls, spec: FaultSpec, ctx: FaultContext) -> SignalWorker:
        sig = signal.SIGKILL if KINDS[spec.kind].crash else signal.SIGTERM
        return cls(ctx.runtime, sig, spec.kind, ctx.last_result, spec.target, ctx.rng, spared=ctx.hit)

    def inject(self) -> None:
        self.targets = select_workers(self.selector, [w for w in self.runtime.alive() if w not in self.spared], self.last_result, self.rng)
        self.target = ",".join(self.targets)
        for w in self.targets:
            log.info("injecting %s", self.kind, extra={"worker_id": w})
            self.runtime.kill(w, self.sig)

    def evidence(self) -> str:
        codes = self.runtime.exit_codes()
        exited = {w: codes.get(w) for w in self.targets}
        if any(rc is None for rc in exited.values()):
            return ""  # a terminated worker is still finishing its chunk
        return "; ".join(f"{w} exited with status {describe_exit(rc)}" for w, rc in exited.items())
