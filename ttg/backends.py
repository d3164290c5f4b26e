"""The backend registry: everything TTG knows about a broker backend, in one entry per backend.

Config, the broker factory and the status reader read it, so a third backend is one entry here plus its adapter
modules, and a name or URL scheme nobody registered fails with the list of the ones that exist: nothing falls back
to a default backend. Adapters are named as ``module:attribute`` and imported only when used, so a run on Redis never
imports pika and the other way round.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ttg.errors import MissingDriver, UnknownBackend

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
    round_trips: str = ""  # ttg bench: round trips the server answered so far, from a URL; "" when it keeps no count

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

    def private_server(self, *, persistence: bool) -> PrivateServer:
        """A private broker of this backend for one run (not started)."""
        server: PrivateServer = self.load("server").for_run(persistence=persistence)
        return server


REGISTRY: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec(
            "redis",
            "redis",
            ("redis", "rediss"),
            6379,
            "ttg.brokers.redis_streams:RedisStreamsBroker",
            "ttg.brokers.redis_streams:check_url",
            "ttg.brokers.redis_status:read",
            "ttg.servers.redis_server:PrivateRedis",
            durable=False,  # without AOF a restarted redis-server is empty
            k8s_ports=(6379,),
            k8s_url="redis://:{password}@{host}:6379/0",
            round_trips="ttg.brokers.redis_status:round_trips",
        ),
        BackendSpec(
            "rabbitmq",
            "pika",
            ("amqp", "amqps"),
            5672,
            "ttg.brokers.rabbitmq:RabbitMQBroker",
            "ttg.brokers.amqp_client:check_url",
            "ttg.brokers.rabbitmq_status:read",
            "ttg.servers.rabbitmq_server:PrivateRabbitMQ",
            durable=True,  # durable quorum queues and persistent messages
            k8s_ports=(5672, 15672),  # AMQP, and the management API ttg status reads
            k8s_url="amqp://{user}:{password}@{host}:5672/%2F",
        ),
    )
}
NAMES = tuple(REGISTRY)
DEFAULT = "redis"  # the backend of a run that names none
SCHEMES = tuple(s for spec in REGISTRY.values() for s in spec.schemes)


def backend(name: str) -> BackendSpec:
    """The spec of backend ``name``; UnknownBackend (a ConfigError) names the ones that exist."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownBackend(f"unknown backend {name!r}; known backends: {', '.join(NAMES)}") from None


def for_url(url: str) -> BackendSpec:
    """The backend whose driver serves ``url``'s scheme; UnknownBackend names the schemes that exist."""
    scheme = urlsplit(url).scheme
    for spec in REGISTRY.values():
        if scheme in spec.schemes:
            return spec
    known = ", ".join(f"{s}://" for s in SCHEMES)
    raise UnknownBackend(f"no broker backend handles {scheme or '(no scheme)'}:// URLs; known schemes: {known}")
