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
from collections.abc import Mapping

from ttg.nemesis.base import Nemesis
from ttg.nemesis.proxy import FaultProxy
from ttg.servers import PrivateServer

log = logging.getLogger(__name__)


BrokerServer = PrivateServer  # the private brokers TTG starts; a shared broker is never hit


class KillBroker(Nemesis):
    """SIGKILL the broker; heal = restart it on the same data (Redis AOF, durable RabbitMQ queues: nothing is lost)."""

    kind = "kill-broker"

    def __init__(self, server: BrokerServer) -> None:
        self.server = server
        self.target = "broker"
        self._down = False
        self._pids: tuple[int | None, int | None] = (None, None)

    def inject(self) -> None:
        log.info("injecting kill-broker")
        before = self.server.pid
        self.server.kill(signal.SIGKILL)
        self._down = True
        self._pids = (before, self.server.pid)  # (pid, None): the process is really gone

    def evidence(self) -> str:
        before, after_kill = self._pids
        if before is None or after_kill is not None:
            return ""
        return f"broker pid {before} killed; restarted as pid {self.server.pid}" if not self._down else f"broker pid {before} killed"

    def heal(self) -> None:
        if self._down:
            self._down = False
            self.server.restart()
            log.info("broker restarted")


class PauseBroker(Nemesis):
    """SIGSTOP the broker (connections stay open, nothing is answered); heal = SIGCONT."""

    kind = "pause-broker"

    def __init__(self, server: BrokerServer) -> None:
        self.server = server
        self.target = "broker"
        self._paused = False
        self._state = ""

    def inject(self) -> None:
        log.info("injecting pause-broker")
        self.server.pause()
        self._paused = True
        deadline = time.monotonic() + 1.0
        while (state := self.server.state()) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)  # a stop signal lands within microseconds, but not synchronously
        self._state = state  # 'T': the kernel has the process stopped

    def evidence(self) -> str:
        return f"broker pid {self.server.pid} in state {self._state!r} (stopped)" if self._state == "T" else ""

    def heal(self) -> None:
        if self._paused:
            self._paused = False
            self.server.resume()
            log.info("broker resumed")


class PartitionBroker(Nemesis):
    """Cut the selected workers off the broker (their proxies blackhole the traffic); heal = forward again."""

    kind = "partition-broker"

    def __init__(self, proxies: Mapping[str, FaultProxy]) -> None:
        self.proxies = dict(proxies)
        self.target = _describe(self.proxies)
        self._held_before = 0

    def inject(self) -> None:
        log.info("injecting partition-broker", extra={"worker_id": self.target})
        self._held_before = sum(p.held_while_blackholed for p in self.proxies.values())
        for p in self.proxies.values():
            p.blackhole()

    def evidence(self) -> str:
        held = sum(p.held_while_blackholed for p in self.proxies.values()) - self._held_before
        return f"{held} piece(s) of traffic held back" if held else ""

    def heal(self) -> None:
        for p in self.proxies.values():
            p.restore()


class Latency(Nemesis):
    """Delay every piece of the selected workers' traffic to and from the broker by ``latency_s``; heal = no delay."""

    kind = "latency"

    def __init__(self, proxies: Mapping[str, FaultProxy], latency_s: float = 0.05) -> None:
        self.proxies = dict(proxies)
        self.latency_s = latency_s
        self.target = f"{_describe(self.proxies)} +{latency_s * 1000:g} ms"
        self._delayed_before = 0

    def inject(self) -> None:
        log.info("injecting latency", extra={"latency_ms": self.latency_s * 1000})
        self._delayed_before = sum(p.delayed for p in self.proxies.values())
        for p in self.proxies.values():
            p.latency_s = self.latency_s

    def evidence(self) -> str:
        delayed = sum(p.delayed for p in self.proxies.values()) - self._delayed_before
        return f"{delayed} piece(s) of traffic delayed by {self.latency_s * 1000:g} ms" if delayed else ""

    def heal(self) -> None:
        for p in self.proxies.values():
            p.restore()


def _describe(proxies: Mapping[str, FaultProxy]) -> str:
    return ",".join(proxies) + "<->broker"
