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

# Cases that run with `make scenarios` only (the matrix mark), so that `make test` stays well inside CI's budget. Each
# has a sibling in make test that takes the same path through TTG: the same case on the other backend, the other signal
# or coordinator fault on the same backend, or the same fault as a matrix cell. (A RabbitMQ-only path, such as its
# node dying with a SIGKILLed coordinator or a resume after one, stays in make test.)
LEFT_TO_MAKE_SCENARIOS = {
    "tests/test_contract.py::test_an_algorithm_that_holds_the_gil_does_not_starve_the_heartbeat[rabbitmq]",
    "tests/test_contract.py::test_sigkill_of_a_worker_mid_chunk_loses_nothing_and_recovers_within_the_reclaim_bound[rabbitmq]",
    "tests/test_hostile.py::test_a_second_coordinator_for_a_live_run_is_refused_and_the_first_completes[rabbitmq]",
    "tests/test_hostile.py::test_a_rerun_of_a_killed_run_is_refused_at_once_and_touches_nothing_then_resume_completes[rabbitmq]",
    "scenarios/test_faults.py::test_one_worker_cut_off_while_the_others_carry_on[rabbitmq]",
    "tests/test_resume.py::test_a_coordinator_fault_ends_ttg_run_and_resume_finishes_the_run[rabbitmq-kill-coordinator]",
    "tests/test_resume.py::test_a_coordinator_fault_ends_ttg_run_and_resume_finishes_the_run[redis-terminate-coordinator]",
    "tests/test_hostile.py::test_an_interrupted_run_stays_resumable_and_resume_loses_nothing[redis-SIGTERM]",
    "tests/test_hostile.py::test_an_interrupted_run_stays_resumable_and_resume_loses_nothing[rabbitmq-SIGINT]",
    "tests/test_status.py::test_status_shows_queued_inflight_consumers_and_dead_letters_of_a_run[rabbitmq]",
    "tests/test_k8s_semantics.py::test_the_partition_stalls_the_sweep_only_once_its_forced_reconnect_meets_the_deny_and_the_heal_restores_it[rabbitmq]",
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid in LEFT_TO_MAKE_SCENARIOS:
            item.add_marker(pytest.mark.matrix)


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
