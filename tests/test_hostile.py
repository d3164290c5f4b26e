"""Hostile and unlucky input: junk and forged messages, reruns of a run id, two coordinators, interruption.

Each test reproduces a way the verdict or the recorded results were once defeated, through the
real CLI where a user would meet it, on both backends (a private broker of the session).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pika
import pytest
import redis

from fixtures.plugin import BrokerHandle
from ttg.broker import DeadLetter, open_broker
from ttg.brokers.rabbitmq_topology import QueueNames
from ttg.config import backend_for_url
from ttg.ledger import Ledger
from ttg.messages import ResultMessage, TaskMessage
from ttg.plan import ChunkPlan

SWEEP = ["--params", "300000", "--chunk", "3000", "--workers", "2", "--cost-us", "15", "--timeout", "90", "--json"]


def _ttg(*args: str) -> list[str]:
    return [sys.executable, "-m", "ttg", *args]


def _coordinator(broker: BrokerHandle, out: Path, run_id: str, *extra: str, sweep: list[str] = SWEEP) -> subprocess.Popen[str]:
    args = ["run", "--backend", backend_for_url(broker.url), "--broker-url", broker.url, "--run-id", run_id, "--out", str(out), *sweep, *extra]
    return subprocess.Popen(_ttg(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_declared(broker: BrokerHandle, run_id: str, proc: subprocess.Popen[str], timeout_s: float = 30.0) -> None:
    """Until the run's task queue exists on the broker (the coordinator has declared the run)."""
    probe = open_broker(broker.url, run_id)
    try:
        deadline = time.monotonic() + timeout_s
        while not probe.has_state():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the run was never declared"
            time.sleep(0.05)
    finally:
        probe.close()


def _publish_raw(url: str, run_id: str, messages: list[tuple[int | None, bytes]]) -> None:
    """Put messages on a run's task queue as anyone with access to the broker could: (claimed chunk id, body)."""
    if backend_for_url(url) == "redis":
        with redis.Redis.from_url(url) as client:
            for chunk, body in messages:
                client.xadd(f"ttg:{{{run_id}}}:tasks", {"c": chunk, "m": body} if chunk is not None else {"m": body})
        return
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        for chunk, body in messages:
            headers = {"x-ttg-chunk": chunk} if chunk is not None else None
            ch.basic_publish("", QueueNames(run_id).tasks, body, pika.BasicProperties(delivery_mode=2, headers=headers))
    finally:
        conn.close()


def _record(proc: subprocess.Popen[str], timeout_s: float = 150.0) -> tuple[int, dict[str, Any], str]:
    stdout, stderr = proc.communicate(timeout=timeout_s)
    return proc.returncode, (json.loads(stdout) if stdout.strip() else {}), stderr


def test_junk_and_forged_tasks_naming_real_chunks_are_rejected_and_the_run_completes(broker: BrokerHandle, tmp_path: Path) -> None:
    run_id = "junk" + uuid.uuid4().hex[:6]
    proc = _coordinator(broker, tmp_path, run_id)
    _wait_declared(broker, run_id, proc)
    junk: list[tuple[int | None, bytes]] = [(c, b"not msgpack \xc1") for c in range(15)]
    forged = TaskMessage(run_id, 99, 0, 10).encode()  # well-formed, but chunk 99 is [297000, 300000)
    other_run = TaskMessage("someotherrun", 5, 15000, 18000).encode()
    _publish_raw(broker.url, run_id, [*junk, (99, forged), (5, other_run), (None, msgpack.packb([1, 2]))])
    rc, rec, stderr = _record(proc)
    v = rec["verdict"]
    assert rc == 0 and v["ok"] and v["lost"] == 0 and v["dead_lettered"] == 0 and v["checksum_ok"], stderr
    assert v["chunks_completed"] == 100 and v["rejected_messages"] == 18, v
    reasons = " | ".join(v["rejected_reasons"])
    assert "not valid msgpack" in reasons and "the plan says [297000, 300000)" in reasons and "someotherrun" in reasons, reasons


def test_a_rerun_of_a_killed_run_is_refused_at_once_and_touches_nothing_then_resume_completes(broker: BrokerHandle, tmp_path: Path) -> None:
    run_id = "rerun" + uuid.uuid4().hex[:6]
    first = _coordinator(broker, tmp_path, run_id)
    seen = tmp_path / run_id / "seen.npy"
    deadline = time.monotonic() + 60
    while not (seen.exists() and 10 <= int(np.load(seen, mmap_mode="r").sum()) < 90) and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    values = np.load(tmp_path / run_id / "results.npy")
    recorded = int((~np.isnan(values)).sum())
    assert recorded > 0

    t0 = time.monotonic()
    rc, rec, stderr = _record(_coordinator(broker, tmp_path, run_id), timeout_s=30)
    assert rc == 2 and not rec, stderr
    assert time.monotonic() - t0 < 10, "refused at once, not after --timeout"
    assert "already has results" in stderr and "--resume" in stderr and f"ttg runs delete {run_id}" in stderr, stderr
    assert "Traceback" not in stderr
    assert np.array_equal(np.load(tmp_path / run_id / "results.npy"), values, equal_nan=True), "recorded results must never be touched"

    rc, rec, stderr = _record(_coordinator(broker, tmp_path, run_id, "--resume"))
    v = rec["verdict"]
    assert rc == 0 and v["ok"] and v["lost"] == 0 and v["checksum_ok"] and v["chunks_completed"] == 100, stderr


def test_a_second_coordinator_for_a_live_run_is_refused_and_the_first_completes(broker: BrokerHandle, tmp_path: Path) -> None:
    run_id = "twice" + uuid.uuid4().hex[:6]
    first = _coordinator(broker, tmp_path / "a", run_id)
    _wait_declared(broker, run_id, first)
    t0 = time.monotonic()
    rc, _, stderr = _record(_coordinator(broker, tmp_path / "b", run_id), timeout_s=30)
    assert rc == 2 and time.monotonic() - t0 < 10, stderr
    assert "another coordinator" in stderr or "already exists on the broker" in stderr, stderr
    assert not (tmp_path / "b" / run_id).exists(), "a refused run writes nothing"
    rc, rec, stderr = _record(first)
    assert rc == 0 and rec["verdict"]["ok"] and rec["verdict"]["lost"] == 0, stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_run_stays_resumable_and_resume_loses_nothing(broker: BrokerHandle, tmp_path: Path, sig: signal.Signals) -> None:
    run_id = "intr" + uuid.uuid4().hex[:6]
    first = _coordinator(broker, tmp_path, run_id)
    seen = tmp_path / run_id / "seen.npy"
    deadline = time.monotonic() + 60
    while not (seen.exists() and 5 <= int(np.load(seen, mmap_mode="r").sum()) < 80) and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(sig)
    rc, _, stderr = _record(first, timeout_s=60)
    assert rc != 0, "the signal must interrupt the run"
    assert "--resume" in stderr and "Traceback" not in stderr, stderr
    rc, rec, stderr = _record(_coordinator(broker, tmp_path, run_id, "--resume"))
    v = rec["verdict"]
    assert rc == 0 and v["ok"] and v["lost"] == 0 and v["checksum_ok"] and v["chunks_completed"] == 100, stderr
    assert rec["resumed_at_chunks"] >= 5


def test_runs_delete_discards_a_run_and_is_refused_while_a_coordinator_holds_it(broker: BrokerHandle, tmp_path: Path) -> None:
    run_id = "del" + uuid.uuid4().hex[:6]
    coord = open_broker(broker.url, run_id)
    coord.claim("elsewhere/1/live")  # a live coordinator (on another host, as far as this one can tell)
    coord.declare(3)
    (tmp_path / run_id).mkdir()
    delete = _ttg("runs", "delete", run_id, "--broker-url", broker.url, "--out", str(tmp_path))
    proc = subprocess.run(delete, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "another coordinator" in proc.stderr, proc.stderr
    coord.release()
    proc = subprocess.run(delete, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and f"run {run_id} deleted" in proc.stderr, proc.stderr
    assert not coord.has_state() and not (tmp_path / run_id).exists()
    coord.close()


@pytest.mark.parametrize("run_id", ["../../x", "a/b", "..", "-rf", "x" * 65, ""])
def test_a_run_id_that_is_not_a_plain_name_is_refused(run_id: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        _ttg("run", "--run-id", run_id, "--out", str(tmp_path), "--params", "100", "--chunk", "10"), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "run id" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == [], "nothing is written for a refused run id"


# -- the ledger's chunk states, without a broker -------------------------------------------------
def _result(run_id: str, plan: ChunkPlan, chunk_id: int) -> bytes:
    c = plan.chunk(chunk_id)
    return ResultMessage(run_id, c.id, c.start, c.stop, "w", 1, np.zeros(c.size).tobytes(), 0.0).encode()


def _dead(run_id: str, plan: ChunkPlan, chunk_id: int, claimed: int | None = None, body: bytes | None = None) -> DeadLetter:
    c = plan.chunk(chunk_id)
    task = TaskMessage(run_id, c.id, c.start, c.stop).encode() if body is None else body
    return DeadLetter(chunk_id if claimed is None else claimed, f"boom {chunk_id}", 3, task)


def test_completed_and_dead_are_disjoint_sets_of_planned_chunk_ids() -> None:
    plan = ChunkPlan(100, 10)
    ledger = Ledger(plan, "r")
    ledger.add(_result("r", plan, 0))
    letters = [
        _dead("r", plan, 0),  # for a completed chunk: noise
        _dead("r", plan, 1),  # a real death
        _dead("r", plan, 1),  # the same death twice: noise
        _dead("r", plan, 2, body=b"\xc1junk"),  # names chunk 2, is not a task: rejected
        _dead("r", plan, 3, body=TaskMessage("r", 3, 0, 10).encode()),  # names chunk 3 with chunk 0's range: rejected
        _dead("r", plan, 4, claimed=5),  # the framing and the task disagree: rejected
        _dead("r", plan, 6, body=TaskMessage("other", 6, 60, 70).encode()),  # another run's: rejected
    ]
    ledger.note_dead_letters(letters)
    ledger.note_dead_letters(letters)  # idempotent: the collector re-reads every dead letter
    assert list(np.flatnonzero(ledger.dead)) == [1] and ledger.dead_reasons == {1: "boom 1"}
    assert (ledger.completed, ledger.dead_open, ledger.accounted) == (1, 1, 2)
    assert (ledger.dead_noise, ledger.dead_rejected) == (2, 4)
    ledger.add(_result("r", plan, 1))  # a copy of chunk 1 completed after all: the result wins
    assert not ledger.dead[1] and (ledger.completed, ledger.dead_open, ledger.accounted) == (2, 0, 2)


def test_the_ledger_is_not_over_until_every_planned_chunk_is_completed_or_dead() -> None:
    plan = ChunkPlan(30, 10)
    ledger = Ledger(plan, "r")
    ledger.note_dead_letters([_dead("r", plan, 0, body=b"junk"), _dead("r", plan, 1, body=b"junk"), _dead("r", plan, 2, body=b"junk")])
    assert ledger.accounted == 0, "three junk dead letters naming three chunks end nothing"
    for c in range(3):
        ledger.add(_result("r", plan, c))
    assert ledger.accounted == 3


# -- secrets and orphans ----------------------------------------------------------------------
def _cmdlines(pids: list[int]) -> dict[int, str]:
    out = {}
    for pid in pids:
        try:
            out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return out


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def test_no_password_in_any_process_arguments_record_or_log(redis_broker: BrokerHandle, tmp_path: Path) -> None:
    url = redis_broker.url  # the session's private Redis requires a generated password
    password = url.split("@")[0].rsplit(":", 1)[1]
    assert len(password) >= 16
    run_id = "sec" + uuid.uuid4().hex[:6]
    proc = _coordinator(redis_broker, tmp_path, run_id)
    _wait_declared(redis_broker, run_id, proc)
    deadline = time.monotonic() + 10
    while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = _cmdlines([proc.pid, *_children(proc.pid)])
    rc, rec, stderr = _record(proc)
    assert rc == 0, stderr
    assert len(lines) >= 3 and all(password not in line for line in lines.values()), lines
    assert "***" in lines[proc.pid], "the coordinator's own title shows the URL redacted"
    leaked = [str(p) for p in tmp_path.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert not leaked and password not in stderr and rec["broker_url"].startswith("redis://:***@"), leaked


def test_a_sigkilled_coordinator_takes_its_private_broker_and_workers_with_it(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _ttg("run", "--params", "3000000", "--chunk", "10000", "--workers", "2", "--cost-us", "10", "--out", str(tmp_path), "--json"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while len(_children(proc.pid)) < 3 and time.monotonic() < deadline:  # the broker and two workers
        time.sleep(0.1)
    children = _children(proc.pid)
    assert len(children) >= 3, children
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 15
    while (left := _cmdlines(children)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still running after the coordinator's SIGKILL: {left}"
