"""The coordinator nemesis: ``ttg run`` signals itself at a progress point (SIGKILL: a crash; SIGTERM: a disruption).

Only the coordinator knows its progress to the chunk, so the fault is fired from inside it, by the same
kernel signal an outside killer would send. What it proves is taken up by ``ttg run --resume`` (the
fuzzer runs one as soon as the first coordinator has died): the run goes on from the ledger and the
broker state the dead one left, and its verdict must still be lost 0.
"""

from __future__ import annotations

import logging
import os
import signal

from ttg.errors import FaultNotInjected
from ttg.faults import KINDS, FaultSpec
from ttg.nemesis.base import FaultContext, Nemesis

log = logging.getLogger(__name__)


class SignalCoordinator(Nemesis):
    """Signal this process. Never returns normally for SIGKILL; for SIGTERM the handler of ``ttg run`` unwinds it."""

    kinds = ("kill-coordinator", "terminate-coordinator")

    @classmethod
    def for_fault(cls, spec: FaultSpec, ctx: FaultContext) -> SignalCoordinator:
        # Never a test's or a Chaos Toolkit action's process, which runs the sweep in-process.
        if not ctx.own_process or ctx.run is None:
            raise FaultNotInjected(f"{spec.kind} signals the coordinator, which must be a ttg run process of its own")
        return cls(spec.kind, signal.SIGKILL if KINDS[spec.kind].crash else signal.SIGTERM, ctx.run[0].run_id)

    def __init__(self, kind: str, sig: int, run_id: str) -> None:
        self.kind, self.sig, self.run_id = kind, sig, run_id
        self.target = f"coordinator (pid {os.getpid()})"

    def inject(self) -> None:
        name = signal.Signals(self.sig).name
        log.warning("%s: sending %s to this coordinator (pid %d); finish run %s with ttg run --resume", self.kind, name, os.getpid(), self.run_id)
        for handler in logging.getLogger().handlers:
            handler.flush()  # SIGKILL ends the process before any buffer is written
        os.kill(os.getpid(), self.sig)
