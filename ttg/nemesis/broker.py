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

    def inject(self) -> None:
        log.info("injecting kill-broker")
        self.server.kill(signal.SIGKILL)
        self._down = True

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

    def inject(self) -> None:
        log.info("injecting pause-broker")
        self.server.pause()
        self._paused = True

    def heal(self) -> None:
        if self._paused:
            self._paused = False
            self.server.resume()
            log.info("broker resumed")


class PartitionBroker(Nemesis):
    """Cut the workers off the broker (the proxy blackholes their traffic); heal = forward again."""

    kind = "partition-broker"

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.target = "workers<->broker"
        self._held_before = 0

    def inject(self) -> None:
        log.info("injecting partition-broker")
        self._held_before = self.proxy.held_while_blackholed
        self.proxy.blackhole()

    def evidence(self) -> str:
        return f"{self.proxy.held_while_blackholed - self._held_before} piece(s) of traffic held back"

    def heal(self) -> None:
        self.proxy.restore()


class Latency(Nemesis):
    """Delay every piece of worker <-> broker traffic by ``latency_s``; heal = no delay."""

    kind = "latency"

    def __init__(self, proxy: FaultProxy, latency_s: float = 0.05) -> None:
        self.proxy = proxy
        self.latency_s = latency_s
        self.target = f"workers<->broker +{latency_s * 1000:g} ms"

    def inject(self) -> None:
        log.info("injecting latency", extra={"latency_ms": self.latency_s * 1000})
        self.proxy.latency_s = self.latency_s

    def heal(self) -> None:
        self.proxy.restore()
