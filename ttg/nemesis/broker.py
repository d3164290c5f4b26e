"""Broker nemeses: kill a private broker and restart it on its data, or freeze it (SIGSTOP) for a while.

Only a broker TTG started itself can be hit (``ttg.servers``): a shared broker is
never killed or paused. Both faults heal themselves after their duration, and
``heal()`` is safe to call early or twice, so a run that ends or fails mid-fault
never leaves a dead or frozen broker behind.
"""

from __future__ import annotations

import logging
import signal
from typing import Protocol

from ttg.nemesis.base import Nemesis

log = logging.getLogger(__name__)


class BrokerServer(Protocol):
    @property
    def url(self) -> str: ...
    def kill(self, sig: int = ...) -> None: ...
    def restart(self) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...


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
