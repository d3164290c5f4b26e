"""Broker nemeses: kill a private broker and restart it on its data, freeze it (SIGSTOP), or cut or slow the
workers' traffic to it through the fault proxy.

Only a broker TTG started itself can be hit (``ttg.servers``): a shared broker is
never killed or paused. Both faults heal themselves after their duration, and
``heal()`` is safe to call early or twice, so a run that ends or fails mid-fault
never leaves a dead or frozen broker behind.
"""

from __future__ import annotations

import logging
import signal
import time
from abc import abstractmethod
from collections.abc import Mapping
from typing import Self

from ttg.errors import FaultNotInjected
from ttg.faults import FaultSpec
from ttg.nemesis.base import FaultContext, Nemesis
from ttg.nemesis.proxy import FaultProxy
from ttg.nemesis.workers import select_workers
from ttg.servers import PrivateServer

log = logging.getLogger(__name__)


BrokerServer = PrivateServer  # the private brokers TTG starts; a shared broker is never hit


class _BrokerProcessFault(Nemesis):
    """A fault on the private broker's process; heal undoes it once, however often it is called."""

    def __init__(self, server: BrokerServer) -> None:
        self.server = server
        self.target = "broker"
        self._active = False

    @classmethod
    def for_fault(cls, spec: FaultSpec, ctx: FaultContext) -> Self:
        if ctx.server is None:
            raise FaultNotInjected(f"{spec.kind} needs a private broker that TTG started (not --broker-url)")
        return cls(ctx.server)

    def heal(self) -> None:
        if self._active:
            self._active = False
            self._undo()

    @abstractmethod
    def _undo(self) -> None: ...


class KillBroker(_BrokerProcessFault):
    """SIGKILL the broker; heal = restart it on the same data (Redis AOF, durable RabbitMQ queues: nothing is lost)."""

    kinds = ("kill-broker",)
    _killed: int | None = None  # the pid that was killed, once the process is really gone

    def inject(self) -> None:
        log.info("injecting kill-broker")
        pid = self.server.pid
        self.server.kill(signal.SIGKILL)
        self._active = True
        self._killed = pid if self.server.pid is None else None

    def evidence(self) -> str:
        if self._killed is None:
            return ""
        return f"broker pid {self._killed} killed" + ("" if self._active else f"; restarted as pid {self.server.pid}")

    def _undo(self) -> None:
        self.server.restart()
        log.info("broker restarted")


class PauseBroker(_BrokerProcessFault):
    """SIGSTOP the broker (connections stay open, nothing is answered); heal = SIGCONT."""

    kinds = ("pause-broker",)
    _state = ""

    def inject(self) -> None:
        log.info("injecting pause-broker")
        self.server.pause()
        self._active = True
        deadline = time.monotonic() + 1.0
        while (state := self.server.state()) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)  # a stop signal lands within microseconds, but not synchronously
        self._state = state  # 'T': the kernel has the process stopped

    def evidence(self) -> str:
        return f"broker pid {self.server.pid} in state {self._state!r} (stopped)" if self._state == "T" else ""

    def _undo(self) -> None:
        self.server.resume()
        log.info("broker resumed")


class _ProxyFault(Nemesis):
    """A fault on the selected workers' fault proxies; evidence counts what the proxies did to traffic meanwhile."""

    counter: str  # the FaultProxy attribute that counts the pieces of traffic this fault affected

    def __init__(self, proxies: Mapping[str, FaultProxy]) -> None:
        self.proxies = dict(proxies)
        self.target = ",".join(self.proxies) + "<->broker"
        self._before = 0
        self._applied = False

    @classmethod
    def for_fault(cls, spec: FaultSpec, ctx: FaultContext) -> Self:
        """The target workers' proxies: every live one by default (``all``), or those ``spec.target`` selects."""
        if not ctx.proxies:
            raise FaultNotInjected(f"{spec.kind} needs the fault proxies between workers and broker")
        live = [w for w in ctx.runtime.alive() if w in ctx.proxies and w not in ctx.hit]
        chosen = live if spec.target in (None, "all") else select_workers(spec.target, live, ctx.last_result, ctx.rng)
        return cls({w: ctx.proxies[w] for w in chosen})

    def _count(self) -> int:
        return sum(int(getattr(p, self.counter)) for p in self.proxies.values())

    def _held_already(self) -> int:
        """Pieces another, overlapping fault of this kind holds at this moment: this fault holds them too."""
        return 0

    def inject(self) -> None:
        log.info("injecting %s", self.kind, extra={"worker_id": self.target})
        self._before = self._count() - self._held_already()
        for p in self.proxies.values():
            self._apply(p)
        self._applied = True

    @abstractmethod
    def _apply(self, proxy: FaultProxy) -> None: ...

    @abstractmethod
    def _undo(self, proxy: FaultProxy) -> None: ...

    def heal(self) -> None:
        if not self._applied:
            return
        self._applied = False
        for p in self.proxies.values():
            self._undo(p)


class PartitionBroker(_ProxyFault):
    """Cut the selected workers off the broker (their proxies blackhole the traffic); heal = forward again."""

    kinds = ("partition-broker",)
    counter = "held_while_blackholed"

    def _apply(self, proxy: FaultProxy) -> None:
        proxy.blackhole()

    def _undo(self, proxy: FaultProxy) -> None:
        proxy.unblackhole()

    def _held_already(self) -> int:
        return sum(p.held_now for p in self.proxies.values())

    def evidence(self) -> str:
        held = self._count() - self._before
        return f"{held} piece(s) of traffic held back" if held else ""


class Latency(_ProxyFault):
    """Delay every piece of the selected workers' traffic to and from the broker by ``latency_s``; heal = no delay."""

    kinds = ("latency",)
    counter = "delayed"

    def __init__(self, proxies: Mapping[str, FaultProxy], latency_s: float = 0.05) -> None:
        super().__init__(proxies)
        self.latency_s = latency_s
        self.target += f" +{latency_s * 1000:g} ms"

    def _apply(self, proxy: FaultProxy) -> None:
        proxy.add_latency(self.latency_s)

    def _undo(self, proxy: FaultProxy) -> None:
        proxy.remove_latency(self.latency_s)

    def evidence(self) -> str:
        delayed = self._count() - self._before
        return f"{delayed} piece(s) of traffic delayed by {self.latency_s * 1000:g} ms" if delayed else ""
