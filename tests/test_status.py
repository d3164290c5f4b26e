"""`ttg status` on both backends: queue depth, in-flight, consumers and dead letters of a live run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from ttg.broker import open_broker
from ttg.plan import ChunkPlan
from ttg.producer import publish_plan
from ttg.status import Rate, RunStatus, read_status


def management_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    return str(request.getfixturevalue("rabbitmq_server").management_url) if backend == "rabbitmq" else None


def test_status_shows_queued_inflight_consumers_and_dead_letters_of_a_run(backend: str, broker_url: str, request: pytest.FixtureRequest) -> None:
    run_id = "st" + uuid.uuid4().hex[:6]
    coord = open_broker(broker_url, run_id)
    coord.declare(10)
    publish_plan(coord, ChunkPlan(10, 1))
    worker = open_broker(broker_url, run_id, consumer="w", prefetch=1)
    try:
        first = worker.receive(2.0)
        assert first is not None
        worker.fail(first, "ValueError: boom", retry=False)
        done = worker.receive(2.0)
        assert done is not None
        worker.complete(done, 1, b"result")  # (the chunk id is only recorded: no coordinator reads it here)
        held = worker.receive(2.0)  # held, not completed: in flight (and the completion above has gone out)
        assert held is not None
        # per worker: what it completed (Redis counts it; RabbitMQ's broker does not) and what it holds
        one = [("w", 1 if backend == "redis" else None, 1)]
        want = {"queued": 7, "inflight": 1, "consumers": 1, "dead_lettered": 1, "rejected": 0, "ended": False, "workers": one}
        got: dict[str, Any] = {}
        deadline = time.monotonic() + 20  # RabbitMQ's management API refreshes its counts about every 5 s
        while time.monotonic() < deadline:
            (run,) = read_status(broker_url, run_id=run_id, management_url=management_url(backend, request))
            got = {k: getattr(run, k) for k in want if k != "workers"}
            got["workers"] = [(w.name, w.done, w.inflight) for w in run.workers]
            if got == want:
                break
            time.sleep(0.2)
        assert got == want
        assert all(w.idle_s is not None and w.idle_s < 30 for w in run.workers), run.workers
        assert run.unit == ("chunks" if backend == "redis" else "messages")
        coord.end_run()
        deadline = time.monotonic() + 20
        while not read_status(broker_url, run_id=run_id, management_url=management_url(backend, request))[0].ended and time.monotonic() < deadline:
            time.sleep(0.2)
        assert read_status(broker_url, run_id=run_id, management_url=management_url(backend, request))[0].ended
    finally:
        worker.close()
        coord.delete_run()
        coord.close()
    assert read_status(broker_url, run_id=run_id, management_url=management_url(backend, request)) == []


def test_ttg_status_prints_json_for_a_broker(backend: str, broker_url: str, request: pytest.FixtureRequest) -> None:
    run_id = "cli" + uuid.uuid4().hex[:6]
    coord = open_broker(broker_url, run_id)
    coord.declare(3)
    publish_plan(coord, ChunkPlan(3, 1))
    cmd = [sys.executable, "-m", "ttg", "status", "--broker-url", broker_url, "--run-id", run_id, "--json"]
    if backend == "rabbitmq":
        cmd += ["--management-url", str(management_url(backend, request))]
    try:
        deadline = time.monotonic() + 20
        while True:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stderr
            runs = json.loads(out.stdout)
            if (runs and runs[0]["queued"] == 3) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert [(r["run_id"], r["queued"], r["inflight"]) for r in runs] == [(run_id, 3, 0)]
    finally:
        coord.delete_run()
        coord.close()


def test_status_without_a_broker_or_management_api_says_what_to_do(redis_url: str) -> None:
    out = subprocess.run([sys.executable, "-m", "ttg", "status"], capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 2 and "pass --broker-url" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "ttg", "status", "--broker-url", "amqp://guest:guest@127.0.0.1:1/", "--management-url", "http://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 3 and "rabbitmq_management" in out.stderr


def test_rate_and_eta_follow_progress_and_ignore_growth() -> None:
    def snap(queued: int, completed: int | None = None) -> RunStatus:
        return RunStatus("r", "chunks", queued, 0, 1, 0, 0, False, completed=completed)

    rate = Rate(smoothing=1.0)
    rate.update(snap(100), now=0.0)
    rate.update(snap(120), now=1.0)  # publishing: remaining grew
    assert rate.per_s == 0.0 and rate.eta_s(snap(120)) is None
    rate.update(snap(100), now=2.0)
    assert rate.per_s == 20.0 and rate.eta_s(snap(100)) == 5.0
    counted = Rate(smoothing=1.0)
    counted.update(snap(50, completed=10), now=0.0)
    counted.update(snap(40, completed=20), now=2.0)
    assert counted.per_s == 5.0 and counted.eta_s(snap(0, completed=60)) == 0.0


def test_watch_fits_80_columns_shows_percent_done_and_keeps_an_ended_run_with_its_verdict(redis_url: str, tmp_path: Any) -> None:
    run_id = "watch" + uuid.uuid4().hex[:7]
    env = {**os.environ, "COLUMNS": "80"}
    watch = [sys.executable, "-m", "ttg", "status", "--broker-url", redis_url, "--run-id", run_id, "--watch", "--interval", "0.2", "--out", str(tmp_path)]
    watcher = subprocess.Popen(watch, stderr=subprocess.PIPE, text=True, env=env)
    try:
        sweep = [sys.executable, "-m", "ttg", "run", "--broker-url", redis_url, "--run-id", run_id, "--params", "200000", "--chunk", "2000"]
        ran = subprocess.run([*sweep, "--workers", "2", "--cost-us", "20", "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr[-2000:]
        time.sleep(1.0)  # the watcher sees the run gone from the broker
    finally:
        watcher.send_signal(signal.SIGINT)
        _, screen = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, screen[-2000:]
    last = screen[screen.rindex("TTG runs on") :].splitlines()
    assert all(len(line) <= 80 for line in last), "\n".join(line for line in last if len(line) > 80)
    (row,) = [line for line in last if run_id in line]
    assert " ok " in row and "100%" in row and "100/100" in row and "…" not in row, row  # kept, with the record's verdict


def test_the_status_table_fits_80_columns_without_cutting_a_cell_at_100m_scale() -> None:
    import io

    from rich.console import Console

    from ttg.cli_status import status_table

    runs = [
        RunStatus("a1b2c3d4e5f6", "chunks", 9_955_000, 1_280, 100, 3, 0, False, planned=10_000_000, completed=44_872),
        RunStatus("ffeeddccbbaa", "messages", 31_250, 64, 4, 0, 5, False),
        RunStatus("0123456789ab", "chunks", 0, 0, 0, 0, 0, True, planned=1000, completed=964),
    ]
    rate = Rate()
    rate.per_s = 123_456.7
    buf = io.StringIO()
    Console(file=buf, width=80).print(status_table(runs, {"a1b2c3d4e5f6": rate}, "redis://h:6379/0", {"0123456789ab": "FAILED: lost 36, dead 0"}))
    screen = buf.getvalue()
    assert "…" not in screen and all(len(line) <= 80 for line in screen.splitlines()), screen
    assert "44,872/10M" in screen and "9.96M" in screen and "0123456789ab: FAILED: lost 36, dead 0" in " ".join(screen.split()), screen
