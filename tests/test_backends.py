"""The backend registry (ttg.backends): one entry per backend, read by config, the broker factory and ttg status."""

from __future__ import annotations

from importlib.resources import files

import pytest

from ttg import backends
from ttg.broker import Broker, check_backend_available, open_broker
from ttg.config import BACKENDS, backend_for_url
from ttg.errors import ConfigError, UnknownBackend


@pytest.mark.parametrize("name", backends.NAMES)
def test_every_registered_backend_names_adapters_that_exist(name: str) -> None:
    spec = backends.backend(name)
    assert issubclass(spec.load("broker"), Broker)
    assert callable(spec.load("url_check")) and callable(spec.load("status_reader"))
    for scheme in spec.schemes:
        assert backends.for_url(f"{scheme}://host/") is spec and backend_for_url(f"{scheme}://host/") == name
    # The Kubernetes manifests render the broker from a template named after the backend.
    assert files("ttg.k8s").joinpath("templates", f"{name}.yaml.j2").is_file()


def test_the_config_offers_exactly_the_registered_backends() -> None:
    assert BACKENDS == backends.NAMES == ("redis", "rabbitmq")


def test_an_unknown_backend_or_scheme_fails_with_the_known_ones_and_never_falls_back() -> None:
    with pytest.raises(UnknownBackend, match="unknown backend 'nats'; known backends: redis, rabbitmq"):
        check_backend_available("nats")
    with pytest.raises(UnknownBackend, match=r"nats:// URLs; known schemes: redis://, rediss://, amqp://, amqps://"):
        open_broker("nats://127.0.0.1:4222", "run-1")
    with pytest.raises(ConfigError, match=r"must start with redis://, rediss://, amqp:// or amqps://"):
        backend_for_url("http://127.0.0.1/")
