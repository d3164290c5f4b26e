"""Fixtures: a private redis-server per test session (never the system one), and helpers to run sweeps."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from ttg.config import RunConfig, load_run_config
from ttg.record import RunRecord
from ttg.run import execute
from ttg.servers.redis_server import PrivateRedis

TESTS_DIR = Path(__file__).parent


@pytest.fixture(scope="session")
def redis_server() -> Iterator[PrivateRedis]:
    with PrivateRedis(appendonly=False) as server:
        yield server


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
def run_sweep(tmp_path: Path, redis_url: str) -> Any:
    """Run a real sweep (real worker processes, the session's private Redis) and return its record."""

    def run(**settings: Any) -> RunRecord:
        settings.setdefault("broker_url", redis_url)
        settings.setdefault("out", tmp_path / "runs")
        cfg: RunConfig = load_run_config(settings, env={})
        return execute(cfg)

    return run
