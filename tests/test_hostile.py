"""Hostile and unlucky input: junk and forged messages, reruns of a run id, two coordinators, interruption.

Each test reproduces a way the verdict or the recorded results were once defeated, through the
real CLI where a user would meet it, on both backends (a private broker of the session).
"""

from __future__ import annotations

import dataclasses
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
import pika.exceptions
import pytest
import redis

from ttg.broker import DeadLetter, open_broker
from ttg.brokers.rabbitmq.topology import QueueNames
from ttg.brokers.rabbitmq.wire import read_task
from ttg.config import backend_for_url
from ttg.errors import MessageError
from ttg.ledger import Ledger
from ttg.messages import ResultMessage, TaskMessage
from ttg.plan import ChunkPlan
from ttg.testing.plugin import BrokerHandle

from .runs import wait_recorded

SWEEP = ["--params", "300000", "--chunk", "3000", "--workers", "2", "--cost-us", "15", "--timeout", "90", "--json"]


def _ttg(*args: str) -> list[str]:
    return [sys.executable, "-m", "ttg", *args]


def _coordinator(broker: BrokerHandle, out: Path, run_id: str, *extra: str, sweep: list[str] = SWEEP) -> subprocess.Popen[str]:
    args = ["run", "--backend", backend_for_url(broker.url), "--broker-url", broker.url, "--run-id", run_id, "--out", str(out), *sweep, *extra]
    # SIGINT as at a terminal: a shell without job control starts a background job (a CI runner, `make test &`) with
    # SIGINT ignored, Python keeps an inherited ignore, and the Ctrl-C test would find a coordinator deaf to it.
    return subprocess.Popen(_ttg(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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


def test_forged_completions_of_every_chunk_cannot_silence_the_genuine_results(redis_broker: BrokerHandle, tmp_path: Path) -> None:
    """Someone with access to Redis runs the COMPLETE script for every chunk before any worker does, with junk for the
    results. Redis remembers those chunks as completed; the ledger rejects the junk. The genuine results that follow
    must still reach the ledger: were they dropped at the broker as duplicates, every chunk would wait for --timeout
    and be reported lost. (RabbitMQ keeps no per-chunk memory: a forged result there is only rejected.)"""
    run_id = "fc" + uuid.uuid4().hex[:6]
    proc = _coordinator(redis_broker, tmp_path, run_id, sweep=[*SWEEP[:-3], "--timeout", "25", "--json"])
    _wait_declared(redis_broker, run_id, proc)
    forger = open_broker(redis_broker.url, run_id, consumer="forger")
    try:
        for chunk in range(100):
            forger.complete(None, chunk, b"junk \xc1")
        forger.drained()
    finally:
        forger.close()
    rc, rec, stderr = _record(proc)
    v = rec["verdict"]
    assert rc == 0 and v["ok"] and v["lost"] == 0 and v["checksum_ok"] and v["chunks_completed"] == 100, (v, stderr[-2000:])
    assert v["rejected_messages"] == 100 and v["duplicates"] == 0, v


def test_a_rerun_of_a_killed_run_is_refused_at_once_and_touches_nothing_then_resume_completes(broker: BrokerHandle, tmp_path: Path) -> None:
    run_id = "rerun" + uuid.uuid4().hex[:6]
    first = _coordinator(broker, tmp_path, run_id)
    wait_recorded(tmp_path / run_id, 10, 90)
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
    wait_recorded(tmp_path / run_id, 5, 80)
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


@dataclasses.dataclass
class _Url:
    url: str


@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_no_password_in_any_process_arguments_record_or_log(redis_broker: BrokerHandle, tmp_path: Path, form: str) -> None:
    url = redis_broker.url  # the session's private Redis requires a generated password
    password = url.split("@")[0].rsplit(":", 1)[1]
    assert len(password) >= 16
    given = _Url(url if form == "userinfo" else url.replace(f":{password}@", "@") + f"?password={password}")
    run_id = "sec" + uuid.uuid4().hex[:6]
    proc = _coordinator(given, tmp_path, run_id)
    _wait_declared(given, run_id, proc)
    deadline = time.monotonic() + 10
    while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = _cmdlines([proc.pid, *_children(proc.pid)])
    rc, rec, stderr = _record(proc)
    assert rc == 0, stderr
    assert len(lines) >= 3 and all(password not in line for line in lines.values()), lines
    assert "***" in lines[proc.pid], "the coordinator's own title shows the URL redacted"
    leaked = [str(p) for p in tmp_path.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert not leaked and password not in stderr and password not in json.dumps(rec) and "***" in rec["broker_url"], leaked


def _descendants(pid: int) -> list[int]:
    found = _children(pid)
    return [*found, *(d for c in found for d in _descendants(c))]


@pytest.mark.parametrize("backend", ["redis", "rabbitmq"])
def test_a_sigkilled_coordinator_takes_its_private_broker_and_workers_with_it(tmp_path: Path, backend: str) -> None:
    args = ["run", "--backend", backend, "--params", "3000000", "--chunk", "10000", "--workers", "2", "--cost-us", "10", "--out", str(tmp_path), "--json"]
    proc = subprocess.Popen(_ttg(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    # The run is under way: its broker (and the broker's helpers), two workers and their two compute children.
    while len(_descendants(proc.pid)) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    children = _descendants(proc.pid)
    assert len(children) >= 5, _cmdlines(children)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 15
    while (left := _cmdlines(children)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still running after the coordinator's SIGKILL: {left}"


def test_rabbitmq_a_bad_header_rejects_that_message_and_never_drops_the_connection(rabbitmq_broker: BrokerHandle, tmp_path: Path) -> None:
    # Once, x-ttg-prior: "zzz" raised on pika's I/O thread: the connection dropped, every prefetched message came back
    # with its delivery count raised, and 154 reconnects later an innocent chunk was dead-lettered.
    run_id = "hdr" + uuid.uuid4().hex[:6]
    proc = _coordinator(rabbitmq_broker, tmp_path, run_id, "--max-deliveries", "2")
    _wait_declared(rabbitmq_broker, run_id, proc)

    def task(c: int) -> bytes:  # a real task of the run: only its headers are wrong
        return TaskMessage(run_id, c, c * 3000, (c + 1) * 3000).encode()

    bad: list[tuple[dict[str, Any], bytes]] = [
        ({"x-ttg-prior": "zzz", "x-ttg-chunk": 3}, task(3)),
        ({"x-ttg-prior": 10**12}, task(4)),
        ({"x-ttg-prior": -1}, task(5)),
        ({"x-ttg-batch": "7"}, task(7)),
        ({"x-ttg-batch": [8, 9]}, msgpack.packb([task(8)])),  # two chunk ids, one body
        ({"x-ttg-batch": [10, "eleven"]}, msgpack.packb([task(10), task(11)])),
        ({"x-ttg-batch": [12]}, b"\xc1 not a batch"),
    ]
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_broker.url))
    try:
        ch = conn.channel()
        for headers, body in bad:
            ch.basic_publish("", QueueNames(run_id).tasks, body, pika.BasicProperties(delivery_mode=2, headers=headers))
    finally:
        conn.close()
    rc, rec, stderr = _record(proc)
    v = rec["verdict"]
    assert rc == 0 and v["ok"] and v["lost"] == 0 and v["dead_lettered"] == 0 and v["checksum_ok"], stderr
    assert v["rejected_messages"] == len(bad), v
    reasons = " | ".join(v["rejected_reasons"])
    assert "x-ttg-prior" in reasons and "x-ttg-batch" in reasons, reasons
    logs = "".join(p.read_text() for p in (tmp_path / run_id / "logs").glob("*.log"))
    assert "reconnecting" not in logs and "connection lost" not in logs, "a bad header must not cost the connection"


@pytest.mark.parametrize(
    "headers, body, error",
    [
        ({"x-ttg-prior": "zzz"}, b"t", "x-ttg-prior"),
        ({"x-ttg-prior": True}, b"t", "x-ttg-prior"),
        ({"x-delivery-count": "many"}, b"t", "x-delivery-count"),
        ({"x-delivery-count": 2**40}, b"t", "x-delivery-count"),
        ({"x-ttg-batch": {"a": 1}}, b"t", "x-ttg-batch"),
        ({"x-ttg-batch": []}, msgpack.packb([]), "non-empty"),  # settled by nobody: a prefetch slot held for good
        ({"x-ttg-batch": [1, 2]}, msgpack.packb([b"t"]), "not 2 task messages"),
        ({"x-ttg-batch": [1]}, msgpack.packb({"not": "a list"}), "not 1 task messages"),
    ],
)
def test_rabbitmq_task_headers_are_read_defensively(headers: dict[str, Any], body: bytes, error: str) -> None:
    with pytest.raises(MessageError, match=error):
        read_task(pika.BasicProperties(headers=headers), body)


def test_rabbitmq_good_task_headers_give_deliveries_and_chunk_ids() -> None:
    assert read_task(pika.BasicProperties(headers={"x-ttg-prior": 1, "x-delivery-count": 1, "x-ttg-chunk": 7}), b"t") == (3, [(7, b"t")])
    assert read_task(pika.BasicProperties(headers=None), b"t") == (1, [(None, b"t")])
    assert read_task(pika.BasicProperties(headers={"x-ttg-chunk": "7"}), b"t") == (1, [(None, b"t")])  # a route, never trusted
    assert read_task(pika.BasicProperties(headers={"x-ttg-batch": [1, 2]}), msgpack.packb([b"a", b"b"])) == (1, [(1, b"a"), (2, b"b")])


def test_the_private_rabbitmq_node_has_a_generated_user_and_no_guest(rabbitmq_broker: BrokerHandle) -> None:
    import stat

    from ttg.brokers.rabbitmq.server import PrivateRabbitMQ

    assert isinstance(rabbitmq_broker, PrivateRabbitMQ)
    assert "guest" not in rabbitmq_broker.url and len(rabbitmq_broker.password) >= 16
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{rabbitmq_broker.port}/%2F?connection_attempts=1"))
    conf = rabbitmq_broker.data_dir / "rabbitmq.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600 and rabbitmq_broker.password in conf.read_text()
    pika.BlockingConnection(pika.URLParameters(rabbitmq_broker.url)).close()


def test_junk_and_forged_task_faults_are_rejected_and_change_nothing_else(broker: BrokerHandle, tmp_path: Path) -> None:
    # The nemeses the fuzzer draws: the same attacks as above, published mid-sweep through the run's own connection.
    run_id = "nem" + uuid.uuid4().hex[:6]
    rc, rec, stderr = _record(_coordinator(broker, tmp_path, run_id, "--fault", "junk-messages@20%/12", "--fault", "forged-task@40%/6"))
    v = rec["verdict"]
    assert rc == 0 and v["ok"] and v["lost"] == 0 and v["dead_lettered"] == 0 and v["checksum_ok"] and v["mismatches"] == 0, stderr
    junk, forged = rec["faults"]
    assert junk["kind"] == "junk-messages" and junk["evidence"].startswith("12 junk-messages message(s) published"), junk
    assert forged["kind"] == "forged-task" and forged["evidence"].startswith("6 forged-task message(s) published"), forged
    assert not junk["note"].startswith("not injected") and not forged["note"].startswith("not injected")
    assert 0 < v["rejected_messages"] <= 18, v  # those still queued when the last chunk was done are deleted with the run


def test_the_coordinator_never_imports_the_users_algorithm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its module-level code may be slow, crash or hold the GIL: only compute children import it (preflight and the
    # verifier included), never the process that holds the run's lease and broker connection.
    log = tmp_path / "imports.txt"
    monkeypatch.setenv("TTG_TEST_IMPORT_LOG", str(log))
    args = ["run", "--params", "20000", "--chunk", "1000", "--workers", "2", "--algorithm", "algos_import_log:double", "--out", str(tmp_path), "--json"]
    proc = subprocess.Popen(_ttg(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rc, rec, stderr = _record(proc)
    assert rc == 0 and rec["verdict"]["checksum_ok"] is True, stderr
    importers = [int(line) for line in log.read_text().split()]
    assert len(importers) >= 4 and proc.pid not in importers, importers  # preflight probe, 2 workers' children, verifier
