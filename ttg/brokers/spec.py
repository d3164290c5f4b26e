"""What TTG knows about one broker backend: the fields of a registry entry (:mod:`ttg.backends`).

Each backend's package (``ttg/brokers/<name>/``) declares its ``SPEC`` without importing its driver: adapters are
named as ``module:attribute`` and imported only when used, so a run on Redis never imports pika and the other way round.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ttg.errors import MissingDriver

if TYPE_CHECKING:
    from ttg.servers import PrivateServer


@dataclass(frozen=True)
class BackendSpec:
    name: str
    driver: str  # the client library it needs, installed with the extra of the backend's name: pip install 'ttg[redis]'
    schemes: tuple[str, ...]  # URL schemes it serves; the first is the one TTG writes
    default_port: int
    broker: str  # the ttg.broker.Broker implementation
    url_check: str  # the driver's own URL parser: ConfigError before anything connects
    status_reader: str  # ttg status: every run on a broker of this backend
    server: str  # the private broker TTG starts for a run (a ttg.servers.PrivateServer)
    durable: bool  # a SIGKILLed private broker restarts with what it confirmed, without --persistence
    k8s_ports: tuple[int, ...]  # the broker Service's ports on Kubernetes (the first is the clients')
    k8s_url: str  # the in-cluster broker URL, from {user}, {password} and {host}
    k8s_template: str  # the broker's StatefulSet and Service, in ttg/k8s/templates/
    # Run in the broker's pod (exec) by the Kubernetes partition: close every client connection, so each client must
    # reconnect, and each reconnect meets the NetworkPolicy (policies are enforced on new connections only).
    k8s_cut_clients: tuple[str, ...] = ()
    round_trips: str = ""  # ttg bench: round trips the server answered so far, from a URL; "" when it keeps no count
    # Its server takes ``management=``: a plugin only ttg status reads, which a warm broker may go without (boots faster).
    management_plugin: bool = False

    def server_version(self) -> str:
        """The version of this machine's server binary, for a report's environment table."""
        try:
            server = self.load("server")
        except MissingDriver:
            return f"unknown ({self.driver} not installed)"
        return str(server.version())

    def round_trip_counter(self) -> Callable[[str], int] | None:
        """``round_trips`` loaded, or None when the backend's server keeps no such count."""
        return self.load("round_trips") if self.round_trips else None

    def load(self, attribute: str) -> Any:
        """Import the ``module:name`` this spec names in ``attribute`` (``broker``, ``url_check``, ``status_reader``, ``server``,
        ``round_trips``)."""
        self.require_driver()
        module_name, _, name = str(getattr(self, attribute)).partition(":")
        return getattr(importlib.import_module(module_name), name)

    def require_driver(self) -> None:
        """MissingDriver, naming the extra to install, when this backend's client library is not installed."""
        try:
            importlib.import_module(self.driver)
        except ImportError:
            raise MissingDriver(
                f"the {self.name} backend needs the {self.driver} package, which is not installed: pip install 'ttg[{self.name}]' (or 'ttg[all]')"
            ) from None

    def private_server(self, *, persistence: bool, status: bool = False) -> PrivateServer:
        """A private broker of this backend for one run (not started); ``status``: readable by ``ttg status``."""
        server: PrivateServer = self.load("server").for_run(persistence=persistence, status=status)
        return server
