"""The backend registry (ttg.backends): one entry per backend, read by config, the broker factory and ttg status."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

from ttg import backends
from ttg.broker import Broker, open_broker
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


def test_a_backend_says_its_server_version_and_whether_its_server_counts_round_trips(redis_url: str) -> None:
    # What ttg bench and the report's environment table ask the registry, instead of testing backend names.
    for spec in backends.REGISTRY.values():
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?", spec.server_version()), spec.server_version()  # both binaries are installed here
    counter = backends.backend("redis").round_trip_counter()
    assert counter is not None and counter(redis_url) >= 0
    assert backends.backend("rabbitmq").round_trip_counter() is None  # RabbitMQ keeps no per-request count


def test_a_report_on_a_machine_without_a_driver_says_so_in_place_of_the_version() -> None:
    code = "import sys; sys.modules['pika'] = None; from ttg import backends; print(backends.backend('rabbitmq').server_version())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "unknown (pika not installed)", proc.stderr


def test_the_config_offers_exactly_the_registered_backends() -> None:
    assert BACKENDS == backends.NAMES == ("redis", "rabbitmq")


def test_an_unknown_backend_or_scheme_fails_with_the_known_ones_and_never_falls_back() -> None:
    with pytest.raises(UnknownBackend, match="unknown backend 'nats'; known backends: redis, rabbitmq"):
        backends.backend("nats")
    with pytest.raises(UnknownBackend, match=r"nats:// URLs; known schemes: redis://, rediss://, amqp://, amqps://"):
        open_broker("nats://127.0.0.1:4222", "run-1")
    with pytest.raises(ConfigError, match=r"must start with redis://, rediss://, amqp:// or amqps://"):
        backend_for_url("http://127.0.0.1/")


def _ttg_without(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``ttg ARGS`` in a Python where ``module`` cannot be imported (as if its extra were not installed)."""
    code = f"import sys; sys.modules[{module!r}] = None; sys.argv = ['ttg', *{list(args)!r}]; from ttg.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_a_backend_whose_driver_is_not_installed_fails_with_the_extra_to_install(tmp_path: Path) -> None:
    proc = _ttg_without("pika", "run", "--backend", "rabbitmq", "--params", "100", "--chunk", "10", "--out", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert "the rabbitmq backend needs the pika package" in proc.stderr and "pip install 'ttg[rabbitmq]'" in proc.stderr
    assert "sweep" not in proc.stderr, "refused before anything starts"
    assert "Traceback" not in proc.stderr


def test_a_redis_run_needs_no_rabbitmq_driver(tmp_path: Path) -> None:
    # The drivers are extras: a sweep on one backend must never import the other's client library.
    proc = _ttg_without("pika", "run", "--backend", "redis", "--params", "2000", "--chunk", "100", "--workers", "1", "--out", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["verdict"]["ok"] is True


@pytest.mark.parametrize("driver", ["redis", "pika"])
def test_the_cli_the_coordinator_and_the_pytest_plugin_import_without_either_driver(driver: str) -> None:
    code = (
        f"import sys; sys.modules[{driver!r}] = None\n"
        "import ttg.cli, ttg.run, ttg.chaos.session, ttg.k8s.manifests, ttg.status, ttg.report.render, ttg.testing.plugin"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
