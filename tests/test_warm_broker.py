"""``ttg broker up|url|down``: a warm private broker that outlives the command that started it, reused by runs.

Real processes throughout: the CLI in a subprocess, the broker it leaves running, a ``ttg run`` against its URL."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from ttg import backends


def ttg(*args: str, state: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TTG_STATE_DIR": str(state)}
    return subprocess.run([sys.executable, "-m", "ttg", *args], capture_output=True, text=True, timeout=300, check=check, env=env)


# RabbitMQ's node takes ~10 s to boot: its case runs with make scenarios' matrix; the same code serves both backends.
@pytest.mark.parametrize("backend", [pytest.param(b, marks=[pytest.mark.matrix] if b == "rabbitmq" else []) for b in backends.NAMES])
def test_a_warm_broker_outlives_its_command_serves_runs_and_goes_with_down(backend: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    url = ttg("broker", "up", "--backend", backend, *(["--no-management"] if backend == "rabbitmq" else []), state=state).stdout.strip()
    try:
        assert url.startswith(backends.backend(backend).schemes[0]) and "127.0.0.1" in url
        saved = json.loads((state / f"broker-{backend}.json").read_text())
        assert stat.S_IMODE((state / f"broker-{backend}.json").stat().st_mode) == 0o600, "the URL carries the password"
        assert psutil.pid_exists(saved["pid"]), "the broker outlives `ttg broker up`"
        again = ttg("broker", "up", "--backend", backend, state=state)
        assert again.stdout.strip() == url and "already up" in again.stderr
        assert ttg("broker", "url", "--backend", backend, state=state).stdout.strip() == url
        no_api = ttg("broker", "url", "--backend", backend, "--management", state=state, check=False)  # Redis: none; RabbitMQ: off
        assert no_api.returncode == 3 and "no management API" in no_api.stderr
        for _ in range(2):  # runs share it, each with its own run-scoped keys or queues
            run = ttg(
                "run", "--backend", backend, "--broker-url", url, "--params", "20000", "--chunk", "1000", "--out", str(tmp_path / "runs"), "--json", state=state
            )
            record = json.loads(run.stdout)
            assert record["verdict"]["ok"] and record["broker_startup_s"] is None  # no broker of its own was started
    finally:
        ttg("broker", "down", "--backend", backend, state=state)
    assert not psutil.pid_exists(saved["pid"]) or psutil.Process(saved["pid"]).status() == psutil.STATUS_ZOMBIE
    assert not (state / f"broker-{backend}.json").exists() and not Path(saved["data_dir"]).exists()
    gone = ttg("broker", "url", "--backend", backend, state=state, check=False)
    assert gone.returncode == 3 and f"no warm {backend} broker is up" in gone.stderr
    assert f"no {backend} broker was up" in ttg("broker", "down", "--backend", backend, state=state).stderr  # down twice: no error


def test_no_management_for_a_backend_without_the_plugin_is_a_usage_error_that_starts_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    out = ttg("broker", "up", "--backend", "redis", "--no-management", state=state, check=False)
    assert out.returncode == 2 and "the redis broker has no management plugin" in out.stderr, out.stderr
    assert not (state / "broker-redis.json").exists() and not (state / "broker-redis-data").exists()


def test_a_state_file_whose_process_is_gone_or_another_is_not_taken_for_a_broker(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # The pid of a live process that is not the broker (this test's own): never signalled, never reused.
    doc = {"backend": "redis", "url": "redis://:x@127.0.0.1:1/0", "pid": os.getpid(), "data_dir": str(tmp_path / "nope"), "startup_s": 0.1}
    (state / "broker-redis.json").write_text(json.dumps({**doc, "started_at": 0.0, "management": True}))
    url = ttg("broker", "up", "--backend", "redis", state=state).stdout.strip()
    try:
        assert url != doc["url"], "a stale state file starts a new broker"
    finally:
        ttg("broker", "down", "--backend", "redis", state=state)
    assert psutil.pid_exists(os.getpid())
