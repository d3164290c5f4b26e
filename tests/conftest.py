"""Fixtures: a private redis-server and rabbitmq-server per test session (never the system ones), and helpers to run sweeps.

``backend`` is parametrised over both brokers with the backend's name in the test id, so
``pytest -k rabbitmq`` selects every RabbitMQ case of the contract suite.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from ttg import backends
from ttg.brokers.rabbitmq.server import PrivateRabbitMQ
from ttg.brokers.redis.server import PrivateRedis
from ttg.config import RunConfig, load_run_config
from ttg.record import RunRecord
from ttg.run import execute

TESTS_DIR = Path(__file__).parent
BACKENDS = backends.NAMES


@pytest.fixture(scope="session")
def redis_server(redis_broker: PrivateRedis) -> PrivateRedis:
    """The plugin's session broker (ttg/testing/plugin.py), under the name these tests use."""
    return redis_broker


@pytest.fixture(scope="session")
def rabbitmq_server(rabbitmq_broker: PrivateRabbitMQ) -> PrivateRabbitMQ:
    return rabbitmq_broker


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def broker_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The session's private broker of the parametrised backend."""
    server = request.getfixturevalue(f"{backend}_server")
    return str(server.url)


@pytest.fixture
def redis_url(redis_server: PrivateRedis) -> str:
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _algorithms_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes import test algorithms (tests/algos.py) by module path."""
    path = os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH", "")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))


@pytest.fixture
def run_sweep(tmp_path: Path, backend: str, broker_url: str) -> Any:
    """Run a real sweep (real worker processes, the session's private broker of ``backend``) and return its record."""

    def run(**settings: Any) -> RunRecord:
        settings.setdefault("backend", backend)
        settings.setdefault("broker_url", broker_url)
        settings.setdefault("out", tmp_path / "runs")
        cfg: RunConfig = load_run_config(settings, env={})
        return execute(cfg)

    return run


@pytest.fixture(autouse=True)
def _quiet_pika() -> None:
    """pika logs every refused connection attempt at ERROR; TTG reports broker trouble itself."""
    logging.getLogger("pika").setLevel(logging.CRITICAL)
