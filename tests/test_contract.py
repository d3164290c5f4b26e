"""The contract suite: whole sweeps on both backends, with the same assertions.

Real private redis-server and rabbitmq-server processes, real `ttg worker`
processes, real SIGKILLs. Every test runs once per backend (ids ``[redis]`` and
``[rabbitmq]``); a behaviour only one backend has is a bug in the interface.
Backend-specific code here only *sets up* a situation (a raw message a foreign
producer might publish, a private broker to kill); it never asserts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ttg.broker import open_broker
from ttg.config import Verify
from ttg.ledger import Ledger
from ttg.messages import TaskMessage
from ttg.plan import ChunkPlan
from ttg.verdict import judge

from .backends import private_broker, publish_raw_task


def explain(record: Any) -> str:
    """On failure show the verdict and faults, not a bare assert."""
    doc = record.to_dict()
    return json.dumps({"verdict": doc["verdict"], "faults": doc["faults"], "exit_codes": record.worker_exit_codes}, indent=1)


def test_a_sweep_completes_and_matches_the_reference(run_sweep: Any) -> None:
    rec = run_sweep(params=20_000, chunk=700, workers=3)
    v = rec.verdict
    assert v.ok and v.lost == 0 and v.duplicates == 0 and v.checksum_ok, explain(rec)
    assert v.chunks_completed == v.chunks_expected == 29
    values = np.load(Path(rec.run_dir) / "results.npy")
    from ttg.algorithms import demo

    assert np.array_equal(values, demo(np.arange(20_000)))
    on_disk = json.loads((Path(rec.run_dir) / "record.json").read_text())
    assert on_disk["run_id"] == rec.run_id and on_disk["timeline"][-1][1] == 29
    assert set(rec.worker_exit_codes.values()) == {0}
    # Every first result carried its worker's finishing time: the lag to its recording is measured for each.
    lag = rec.recording_lag_s
    assert lag["n"] == 29 and 0 <= lag["p50"] <= lag["p99"] <= lag["max"] and rec.coordinator_cpu_s > 0, lag
    memory = rec.coordinator_memory_mb  # the mapped results and ledger are file-backed; the heap is anonymous
    assert memory["anonymous_peak_mb"] > 0 and memory["file_peak_mb"] > 0, memory


def test_the_sleep_algorithm_runs_a_sweep_with_many_workers_and_verifies_against_the_demo(run_sweep: Any) -> None:
    rec = run_sweep(params=4_000, chunk=100, workers=8, algorithm="sleep", cost_us=50)
    v = rec.verdict
    assert v.ok and v.lost == 0 and v.checksum_ok and v.chunks_completed == 40, explain(rec)
    assert rec.algorithm == "sleep" and len(rec.worker_exit_codes) == 8


def test_sigkill_of_a_worker_mid_chunk_loses_nothing_and_recovers_within_the_reclaim_bound(run_sweep: Any) -> None:
    # 40 chunks of 2,000 params at 100 µs each: every chunk takes ~0.2 s, so the kill lands mid-chunk.
    rec = run_sweep(params=80_000, chunk=2_000, workers=2, cost_us=100, reclaim_after_s=1.5, faults=["kill-worker@30%"])
    v = rec.verdict
    assert v.ok and v.lost == 0 and v.chunks_completed == 40, explain(rec)
    (fault,) = rec.faults
    assert fault.kind == "kill-worker" and rec.worker_exit_codes[fault.target] == -9, explain(rec)
    # Bound: reclaim (1.5 s) + recomputing the chunk (0.2 s) + the survivor finishing its own chunk; generous for a noisy host.
    assert fault.recovered_s is not None and fault.recovered_s < 1.5 + 2.0, explain(rec)


def test_a_chunk_slower_than_the_reclaim_bound_is_not_duplicated(run_sweep: Any) -> None:
    # Each chunk takes ~2.5 s, the reclaim bound is 1 s: only the heartbeat keeps the chunks with their workers.
    rec = run_sweep(params=4, chunk=1, workers=2, cost_us=2_500_000, reclaim_after_s=1.0)
    v = rec.verdict
    assert v.ok and v.duplicates == 0 and v.chunks_completed == 4, explain(rec)


def test_a_poison_chunk_is_dead_lettered_after_max_deliveries_and_reported(run_sweep: Any) -> None:
    rec = run_sweep(params=5_000, chunk=500, workers=2, algorithm="algos:poison", max_deliveries=2, reclaim_after_s=1.0)
    v = rec.verdict
    assert not v.ok and v.lost == 0 and v.dead_lettered == 1 and v.dead_letter_ids == [2], explain(rec)
    assert "cannot evaluate parameter 1234" in v.dead_letter_reasons[0]
    assert v.chunks_completed == 9


def test_an_algorithm_that_holds_the_gil_does_not_starve_the_heartbeat(run_sweep: Any) -> None:
    # Each chunk spends ~2 s in one C call holding the GIL, twice the reclaim bound. The algorithm runs in the worker's
    # compute child, so the worker's heartbeat (Redis) and pika's I/O thread (RabbitMQ) carry on: nothing is stolen,
    # nothing is dead-lettered as if it were poisonous.
    rec = run_sweep(params=6, chunk=1, workers=2, algorithm="algos:holds_the_gil", reclaim_after_s=1.0, max_deliveries=2)
    v = rec.verdict
    assert v.ok and v.lost == 0 and v.dead_lettered == 0 and v.duplicates == 0, explain(rec)


def test_a_crashing_algorithm_fails_its_chunk_not_its_worker(run_sweep: Any) -> None:
    rec = run_sweep(params=5_000, chunk=500, workers=2, algorithm="algos:segfaults_on_poison", max_deliveries=2, reclaim_after_s=1.0)
    v = rec.verdict
    assert not v.ok and v.lost == 0 and v.dead_letter_ids == [2] and v.chunks_completed == 9, explain(rec)
    assert "compute process killed by SIGSEGV" in v.dead_letter_reasons[0], explain(rec)
    assert set(rec.worker_exit_codes.values()) == {0}, "the workers survive their compute child's crash"


def test_static_mode_with_a_kill_reports_exactly_the_lost_chunks(run_sweep: Any) -> None:
    rec = run_sweep(params=40_000, chunk=1_000, workers=2, cost_us=50, mode="static", faults=["kill-worker@30%"])
    v = rec.verdict
    killed = rec.faults[0].target
    assert not v.ok and v.lost > 0, explain(rec)
    values = np.load(Path(rec.run_dir) / "results.npy")
    missing = [c for c in range(40) if np.isnan(values[c * 1000])]
    assert v.lost_chunk_ids == missing, explain(rec)
    block = set(ChunkPlan(40_000, 1_000).static_assignment(2, int(killed[1:])))
    assert set(missing) <= block, explain(rec)


def test_a_terminated_worker_finishes_its_chunk_and_exits_143_not_0(run_sweep: Any) -> None:
    # 143, not 0: stopped before the run ended. On Kubernetes a 0 would mark the pod Succeeded, and one success stops
    # a work-queue Job from replacing any pod; 143 is what the worker Job's podFailurePolicy ignores (tests/test_k8s_semantics.py).
    rec = run_sweep(params=40_000, chunk=1_000, workers=2, cost_us=100, faults=["terminate-worker@20%"])
    v = rec.verdict
    assert v.ok and v.lost == 0, explain(rec)
    target = rec.faults[0].target
    assert rec.worker_exit_codes[target] == 143, explain(rec)
    assert "143 (stopped by SIGTERM before the run ended)" in rec.faults[0].evidence, explain(rec)
    assert all(rc == 0 for w, rc in rec.worker_exit_codes.items() if w != target), explain(rec)


def test_a_user_algorithm_is_verified_on_a_seeded_sample(run_sweep: Any) -> None:
    rec = run_sweep(params=3_000, chunk=100, workers=2, algorithm="algos:square_root", verify="sample:200")
    v = rec.verdict
    assert v.ok and v.verify == "sample:200" and v.checksum_ok and v.mismatches == 0, explain(rec)


def test_a_malformed_message_is_rejected_and_the_sweep_still_completes(backend: str, broker_url: str, tmp_path: Path) -> None:
    run_id = "mal" + uuid.uuid4().hex[:6]
    plan = ChunkPlan(3_000, 300)
    coord = open_broker(broker_url, run_id)
    coord.declare(plan.chunks)
    tasks = [(c.id, TaskMessage(run_id, c.id, c.start, c.stop).encode()) for c in plan]
    coord.publish_tasks(tasks[:5])
    publish_raw_task(backend, broker_url, run_id, b"\x93not a task")
    publish_raw_task(backend, broker_url, run_id, TaskMessage("another-run", 0, 0, 1).encode())
    coord.publish_tasks(tasks[5:])
    logs = tmp_path / "w.log"
    cmd = [
        sys.executable,
        "-m",
        "ttg",
        "worker",
        "--broker-url",
        broker_url,
        "--run-id",
        run_id,
        "--worker-id",
        "solo",
        "--params",
        str(plan.params),
        "--chunk",
        str(plan.chunk_size),
        "--log-format",
        "json",
        "--log-level",
        "debug",
    ]
    ledger = Ledger(plan, run_id)
    with logs.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=fh)
        try:
            deadline = time.monotonic() + 30
            while ledger.completed < plan.chunks and time.monotonic() < deadline:
                for raw in coord.read_results(1000, 0.2):
                    ledger.add(raw)
            coord.end_run()  # as the coordinator does: the worker then exits by itself
            assert proc.wait(timeout=30) == 0, logs.read_text()
        finally:
            proc.kill()
    rejected = coord.rejections()
    verdict = judge(ledger, coord.dead_letters(), verify=Verify("full"), algorithm="demo", rejected=rejected)
    assert verdict.ok and verdict.chunks_completed == 10 and verdict.rejected_messages == 2 and verdict.dead_lettered == 0, verdict
    reasons = [r.reason for r in rejected]
    assert any("not valid msgpack" in r for r in reasons) and any("belongs to run 'another-run'" in r for r in reasons), reasons
    events = [json.loads(line) for line in logs.read_text().splitlines() if line.startswith("{")]
    assert {"started", "taken", "finished", "rejected", "exited"} <= {e.get("event") for e in events}
    taken = next(e for e in events if e.get("event") == "taken")
    assert taken["run_id"] == run_id and taken["worker_id"] == "solo" and "chunk_id" in taken
    coord.delete_run()
    coord.close()


def test_two_sweeps_share_one_broker_without_interfering(run_sweep: Any) -> None:
    import threading

    records: list[Any] = []
    threads = [threading.Thread(target=lambda: records.append(run_sweep(params=10_000, chunk=250, workers=1))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(records) == 2 and all(r.verdict.ok for r in records), [explain(r) for r in records]
    assert records[0].run_id != records[1].run_id


@pytest.mark.parametrize("workers", [1, 4])
def test_worker_count_does_not_change_the_result(run_sweep: Any, workers: int) -> None:
    rec = run_sweep(params=12_345, chunk=1_000, workers=workers)
    assert rec.verdict.ok and rec.verdict.checksum_actual == rec.verdict.checksum_expected, explain(rec)


def test_a_grid_sweep_runs_end_to_end_and_verifies_against_the_grid_function(run_sweep: Any) -> None:
    rec = run_sweep(grid=["alpha=0:1:101", "beta=1,2,3,4"], chunk=50, workers=2, algorithm="algos:grid_product")
    v = rec.verdict
    assert rec.params == 404 and rec.grid == ["alpha=0:1:101", "beta=1,2,3,4"]
    assert v.ok and v.checksum_ok and v.mismatches == 0, explain(rec)
    values = np.load(Path(rec.run_dir) / "results.npy")
    assert values[4 * 100 + 3] == 1.0 * 4  # alpha=1.0, beta=4


def test_a_run_that_times_out_reports_the_outstanding_chunks_and_its_workers_exit_cleanly(run_sweep: Any) -> None:
    # 40 chunks of 0.25 s on one worker need 10 s; the run gives up after 1.5 s.
    rec = run_sweep(params=40, chunk=1, workers=1, cost_us=250_000, timeout_s=1.5)
    v = rec.verdict
    assert not v.ok and v.lost == 40 - v.chunks_completed > 0, explain(rec)
    assert rec.worker_exit_codes == {"w0": 0}, explain(rec)
    log = (Path(rec.run_dir) / "logs" / "w0.log").read_text()
    # Told at once (SIGTERM), it finished its chunk, saw the run's end marker and exited 0: not 143, a worker cut short.
    assert "signal=SIGTERM" in log and "exit_code=0" in log, log[-2000:]


def test_a_broker_killed_and_restarted_on_its_data_mid_sweep_loses_nothing(backend: str, tmp_path: Path) -> None:
    import signal
    import threading

    from ttg.collector import Progress
    from ttg.config import load_run_config
    from ttg.run import execute

    with private_broker(backend, tmp_path / "broker") as server:
        settings = {"backend": backend, "broker_url": server.url, "params": 100_000, "chunk": 1_000, "workers": 2, "cost_us": 30}
        cfg = load_run_config({**settings, "out": tmp_path / "runs"}, env={})
        outage: dict[str, float] = {}
        progressed = threading.Event()

        def kill_and_restart() -> None:
            if not progressed.wait(timeout=60):
                return
            outage["at"] = time.monotonic()
            server.kill(signal.SIGKILL)  # SIGKILL: no chance to flush anything it had not already made durable
            time.sleep(1.0)
            server.restart()
            outage["healed"] = time.monotonic()

        def on_progress(p: Progress) -> None:
            if p.chunks_done >= 30:
                progressed.set()

        nemesis = threading.Thread(target=kill_and_restart)
        nemesis.start()
        rec = execute(cfg, on_progress=on_progress)
        progressed.set()
        nemesis.join()
    v = rec.verdict
    assert "healed" in outage, "the broker was never killed"
    logs = " ".join(p.read_text() for p in (Path(rec.run_dir) / "logs").glob("*.log"))
    assert "broker unreachable" in logs, "the workers never saw the outage: it did not happen mid-sweep"
    assert v.ok and v.lost == 0 and v.chunks_completed == 100 and v.checksum_ok, explain(rec)


def test_a_chunk_that_fails_once_is_retried_and_the_sweep_completes(run_sweep: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTG_TEST_FLAKY_MARKER", str(tmp_path / "failed-once"))
    rec = run_sweep(params=2_000, chunk=200, workers=2, algorithm="algos:flaky_once", reclaim_after_s=1.0)
    v = rec.verdict
    assert (tmp_path / "failed-once").exists(), "the algorithm never failed: the test proves nothing"
    assert v.ok and v.dead_lettered == 0 and v.lost == 0 and v.duplicates == 0, explain(rec)
    logs = " ".join(p.read_text() for p in (Path(rec.run_dir) / "logs").glob("*.log"))
    assert "transient: the database blinked" in logs


def test_a_killed_workers_chunks_go_to_the_live_workers_once_its_exit_is_seen_not_after_the_reclaim_bound(run_sweep: Any) -> None:
    # A 600 s reclaim bound: a Redis run could only recover through the coordinator seeing the exit (RabbitMQ requeues
    # on the connection's close), and would otherwise run into its 120 s timeout with chunks outstanding.
    rec = run_sweep(params=80_000, chunk=2_000, workers=2, cost_us=50, reclaim_after_s=600.0, timeout_s=120, faults=["kill-worker@30%"])
    v = rec.verdict
    assert v.ok and v.lost == 0 and v.duplicates == 0, explain(rec)
    (fault,) = rec.faults
    assert rec.worker_exit_codes[fault.target] == -9 and fault.recovered_s is not None, explain(rec)
