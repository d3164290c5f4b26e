"""The command line contract: exit codes, one-line errors, the JSON record."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest


def ttg(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ttg", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "--chunk", "0"], "chunk must be in 1..1,000,000 (got 0)"),
        (["run", "--backend", "kafka"], "backend must be one of redis, rabbitmq"),
        (["run", "--fault", "explode@30%"], "unknown fault kind 'explode'"),
        (["run", "--broker-url", "http://localhost"], "broker URL must start with redis://"),
        (["run", "--params", "10", "--chunk", "100"], "must not exceed params"),
        (["run", "--no-such-flag"], "No such option"),
        (["worker", "--run-id", "x", "--params", "10", "--chunk", "5"], "needs a broker"),
        (["worker", "--run-id", "x"], "pass --params N --chunk K"),
        (["worker", "--run-id", "x", "--params", "10", "--chunk", "5", "--poison-chunks", "a,b"], "--poison-chunks must be comma-separated"),
        (["run", "--algorithm", "nocolon", "--params", "100", "--chunk", "10"], "package.module:function"),
    ],
)
def test_usage_and_config_errors_exit_2_with_one_clear_line(args: list[str], message: str) -> None:
    proc = ttg(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_environment_variables_configure_a_run(tmp_path: Path, redis_url: str) -> None:
    import os

    env = {**os.environ, "TTG_PARAMS": "5000", "TTG_CHUNK": "500", "TTG_BROKER_URL": redis_url, "TTG_OUT": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "ttg", "run", "--workers", "1", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout)
    assert (rec["params"], rec["chunk_size"], rec["workers"]) == (5000, 500, 1)


def test_run_prints_the_record_and_exits_1_when_the_verdict_fails(tmp_path: Path, redis_url: str) -> None:
    proc = ttg(
        "run",
        "--broker-url",
        redis_url,
        "--mode",
        "static",
        "--params",
        "20000",
        "--chunk",
        "500",
        "--workers",
        "2",
        "--cost-us",
        "50",
        "--fault",
        "kill-worker@20%",
        "--out",
        str(tmp_path),
        "--json",
    )
    assert proc.returncode == 1, proc.stderr
    rec = json.loads(proc.stdout)
    # where it ran: the commit of this checkout and the machine, for a report rendered elsewhere
    assert re.fullmatch(r"[0-9a-f]{12}(\+changes)?", rec["environment"]["commit"]) and rec["environment"]["cores"] == str(os.cpu_count())
    assert "redis server" in rec["environment"]
    for key in (
        "run_id",
        "ttg_version",
        "backend",
        "runtime",
        "mode",
        "params",
        "chunk_size",
        "chunks",
        "workers",
        "algorithm",
        "cost_us",
        "started_at",
        "finished_at",
        "wall_s",
        "params_per_s",
        "verdict",
        "faults",
        "timeline",
    ):
        assert key in rec
    for key in (
        "ok",
        "chunks_expected",
        "chunks_completed",
        "lost",
        "lost_chunk_ids",
        "duplicates",
        "dead_lettered",
        "checksum_expected",
        "checksum_actual",
        "checksum_ok",
    ):
        assert key in rec["verdict"]
    assert rec["verdict"]["lost"] == len(rec["verdict"]["lost_chunk_ids"]) > 0
    assert rec["faults"][0]["kind"] == "kill-worker" and {"target", "at_s", "recovered_s"} <= set(rec["faults"][0])
    assert "FAILED" in proc.stderr


def test_a_private_broker_is_started_when_no_url_is_given(tmp_path: Path) -> None:
    proc = ttg("run", "--params", "10000", "--chunk", "1000", "--workers", "2", "--out", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout)
    assert rec["verdict"]["ok"] and rec["broker_startup_s"] is not None
    # Start-up counts from before the private broker started, so it holds the broker's own start-up.
    assert rec["broker_startup_s"] <= rec["startup_s"] <= rec["total_s"] - rec["wall_s"], rec
    # The private broker requires a generated password; the record never holds it.
    assert rec["broker_url"].startswith("redis://:***@127.0.0.1:") and not rec["broker_url"].endswith(":6379/0")
    assert not list(tmp_path.rglob("redis.conf")), "the password file lives in the broker's own temporary directory"


def _processes_mentioning(text: str, parent: int | None = None) -> list[int]:
    out = subprocess.run(["pgrep", *(["-P", str(parent)] if parent else []), "-f", "--", text], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and _state(pid) not in ("", "Z")


def test_sigterm_to_the_coordinator_stops_its_workers_and_private_broker(tmp_path: Path) -> None:
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "ttg", "run", "--params", "200000", "--chunk", "1000", "--cost-us", "50", "--out", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob("*/logs/w1.log")) and time.monotonic() < deadline:
        time.sleep(0.05)
    run_id = next(tmp_path.iterdir()).name
    time.sleep(0.5)  # let the sweep get going
    assert _processes_mentioning(f"--run-id {run_id}"), "workers should be running"
    brokers = _processes_mentioning("redis-server", parent=proc.pid)  # redis rewrites its title: find it as our child
    assert len(brokers) == 1, "the run's private broker should be running"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr  # 128 + SIGTERM; Ctrl-C would be 130
    assert "Traceback" not in stderr
    assert not _processes_mentioning(f"--run-id {run_id}"), "workers were orphaned"
    assert not _alive(brokers[0]), "the private broker was orphaned"


def test_bench_compares_ttg_with_pool_side_by_side() -> None:
    # A smoke test of the command: the figures are for the closing note, never asserted here.
    proc = ttg("bench", "--params", "40000", "--chunk", "1000", "--workers", "2", "--repeat", "2", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert len(result["ttg_rounds_s"]) == len(result["pool_rounds_s"]) == 2
    assert result["ratio"] > 0 and result["round_trips_per_chunk"] > 0
    assert "multiprocessing.Pool" in proc.stderr


def test_a_run_with_persistence_completes_on_an_append_only_private_broker(tmp_path: Path) -> None:
    # What AOF guarantees (kill and restart lose nothing) is tested at the broker level; this checks the flag reaches the run.
    proc = ttg("run", "--persistence", "--params", "20000", "--chunk", "1000", "--out", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout)
    assert rec["verdict"]["ok"] and rec["persistence"] is True


def test_a_worker_gives_up_on_an_unreachable_broker_with_exit_3() -> None:
    import port_for

    url = f"redis://127.0.0.1:{port_for.select_random()}/0"  # nothing listens there
    proc = ttg("worker", "--broker-url", url, "--run-id", "x", "--params", "10", "--chunk", "5", "--broker-wait", "1")
    assert proc.returncode == 3, proc.stderr
    assert "Redis unreachable" in proc.stderr and "Traceback" not in proc.stderr


def test_a_worker_of_a_live_coordinator_outlasts_its_broker_wait_and_stops_when_asked() -> None:
    # Soak seed 8056: the last worker gave up on a stalled RabbitMQ after its --broker-wait while its coordinator still
    # waited, and the run ended with chunks held. The coordinator decides when the broker is lost; its workers wait.
    import os
    import signal
    import subprocess
    import sys
    import time

    import port_for

    url = f"redis://127.0.0.1:{port_for.select_random()}/0"  # nothing listens there
    args = ["worker", "--run-id", "x", "--params", "10", "--chunk", "5", "--broker-wait", "1", "--coordinator-pid", str(os.getpid())]
    proc = subprocess.Popen([sys.executable, "-m", "ttg", *args], env={**os.environ, "TTG_BROKER_URL": url}, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4.0)
        assert proc.poll() is None, "the worker gave up while the coordinator that started it (this test) lived"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 3 and "retrying while the coordinator lives" in stderr and "Traceback" not in stderr, stderr


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def test_sigterm_during_a_broker_pause_resumes_and_stops_the_broker(tmp_path: Path) -> None:
    import signal
    import time

    args = ["run", "--params", "400000", "--chunk", "1000", "--cost-us", "50", "--fault", "pause-broker@10%:600s", "--out", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ttg", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    paused: list[int] = []
    while not paused and time.monotonic() < deadline and proc.poll() is None:
        paused = [p for p in _processes_mentioning("redis-server", parent=proc.pid) if _state(p) == "T"]
        time.sleep(0.05)
    assert paused, "the broker should be frozen by the fault"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr  # 128 + SIGTERM; Ctrl-C would be 130
    assert "Traceback" not in stderr
    assert not _alive(paused[0]), "the frozen broker was left behind"


def test_a_coordinator_waits_for_a_broker_that_comes_up_late_within_broker_wait(tmp_path: Path) -> None:
    """A coordinator pod starts beside a broker StatefulSet that is still starting: --broker-wait rides that out,
    with backoff, and the run completes (without it the run fails at once with the broker named)."""
    import shutil
    import time

    import port_for

    port = port_for.select_random()
    url = f"redis://127.0.0.1:{port}/0"
    base = [sys.executable, "-m", "ttg", "run", "--broker-url", url, "--params", "20000", "--chunk", "1000", "--out", str(tmp_path), "--json"]
    quick = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert quick.returncode == 3 and "unreachable" in quick.stderr, quick.stderr
    proc = subprocess.Popen([*base, "--broker-wait", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)  # the coordinator is retrying by now
    assert proc.poll() is None
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    try:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "broker unreachable, retrying" in err, err  # it waited, with backoff, and said so
        assert json.loads(out)["verdict"]["ok"] is True
    finally:
        proc.kill()
        server.terminate()
        server.wait(timeout=30)


def test_every_run_option_with_a_type_shows_it_in_help_and_takes_the_same_converter_as_its_variable() -> None:
    from ttg.cli import cli

    run = cli.commands["run"]
    free_text = {"broker_url", "algorithm", "grid", "faults", "namespace", "image", "run_id"}  # text by nature, parsed after
    untyped = [p.name for p in run.params if isinstance(p, click.Option) and not p.is_flag and p.type is click.STRING and p.name not in free_text]
    assert untyped == [], f"options shown as TEXT in --help: {untyped}"
    help_text = ttg("run", "--help").stdout
    assert "--workers INTEGER 1..1,024" in help_text and "--backend [redis|rabbitmq]" in help_text and "--verify [full|off|sample:N]" in help_text
    # the option and TTG_WORKERS are read by one converter: an underscore or a comma in a number is fine either way
    assert ttg("run", "--workers", "1_025").stderr.count("workers must be in 1..1,024 (got 1,025)") == 1
