"""What a worker pod's end makes the Job do, pinned without a cluster: the real ``ttg worker`` process, under tini as the
image runs it, put through the kubelet's termination sequence; its exit status; and what the rendered worker Job does
about it by the Job controller's documented rules (tests/k8s_rules.py, a transcription of the documentation).

The kubelet's sequence (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination): on a
DELETE with grace, SIGTERM to each container's PID 1, then SIGKILL once terminationGracePeriodSeconds have passed.
A container runtime reports a PID 1 killed by signal N as exit code 128 + N. Here tini is PID 1's stand-in: it runs
as a subreaper (-s) rather than as PID 1 of a namespace, and passes SIGTERM to the worker exactly as in the pod.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.k8s_rules import COMPLETES, INDEX_DONE, INDEX_FAILED, JOB_FAILS, REPLACED_COUNTED, REPLACED_FREE, EndedPod, next_step
from ttg.broker import Broker, open_broker
from ttg.cli import EXIT_ENVIRONMENT, EXIT_TERMINATED, EXIT_USAGE
from ttg.config import load_run_config
from ttg.k8s.manifests import ManifestSettings, documents
from ttg.k8s.runtime import kill_argv
from ttg.ledger import Ledger
from ttg.plan import ChunkPlan
from ttg.producer import publish_plan

TINI = shutil.which("tini")
pytestmark = pytest.mark.skipif(TINI is None, reason="tini is not installed (make brokers installs it; the image runs it as PID 1)")

PLAN = ChunkPlan(400, 10)  # 40 chunks of 10 parameters
COST_US = 20_000  # 0.2 s a chunk: a signal lands mid-chunk


def job(component: str, mode: str = "queue") -> dict[str, Any]:
    cfg = load_run_config({"backend": "redis", "mode": mode, "workers": 4, "runtime": "kubernetes"}, env={})
    return next(d for d in documents(ManifestSettings("r1", cfg)) if d["kind"] == "Job" and d["metadata"]["labels"]["app.kubernetes.io/component"] == component)


def container_name(job_doc: dict[str, Any]) -> str:
    return str(job_doc["spec"]["template"]["spec"]["containers"][0]["name"])


def container_exit_code(returncode: int) -> int:
    """The exit code a container runtime reports for PID 1's end (a signal N reads 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


class Pod:
    """One worker "pod": tini running ``ttg worker`` with the manifest's pid file, on a real broker."""

    def __init__(self, url: str, run_id: str, tmp: Path, name: str, static: str | None = None, cost_us: float = COST_US) -> None:
        self.pid_file = tmp / f"{name}.pid"
        self.log = tmp / f"{name}.log"
        args = ["worker", "--run-id", run_id, "--worker-id", name, "--params", str(PLAN.params), "--chunk", str(PLAN.chunk_size)]
        args += ["--cost-us", str(cost_us), "--reclaim-after", "0.5", "--pid-file", str(self.pid_file)]
        args += ["--static", static] if static else []
        with self.log.open("wb") as fh:
            # Its own session, as a pod's processes are: a SIGKILL of the "container" takes every process in it.
            argv = [TINI or "tini", "-s", "--", sys.executable, "-m", "ttg", *args]
            self.proc = subprocess.Popen(argv, stdout=fh, stderr=fh, env={**os.environ, "TTG_BROKER_URL": url}, start_new_session=True)

    def wait_pid(self) -> None:
        deadline = time.monotonic() + 30
        while not (self.pid_file.exists() and self.pid_file.read_text().strip()):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def kubelet_stop(self, grace_s: float) -> int:
        """The kubelet's termination of the pod: SIGTERM to PID 1, SIGKILL after the grace period; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.kill()  # PID 1 SIGKILLed: the kernel kills the rest of the container's processes with it
        return self.exit_code()

    def exit_code(self, timeout_s: float = 30) -> int:
        return container_exit_code(self.proc.wait(timeout=timeout_s))

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def run(broker_url: str, tmp_path: Path) -> Iterator[tuple[Broker, Ledger, Any]]:
    """A run on the session broker whose plan is published, a ledger collecting its results, and a pod factory."""
    run_id = "sem" + uuid.uuid4().hex[:8]
    coord = open_broker(broker_url, run_id, reclaim_after_s=0.5)
    coord.declare(PLAN.chunks)
    publish_plan(coord, PLAN)
    ledger = Ledger(PLAN, run_id)
    pods: list[Pod] = []

    def pod(name: str, **kw: Any) -> Pod:
        pods.append(Pod(broker_url, run_id, tmp_path, name, **kw))
        return pods[-1]

    try:
        yield coord, ledger, pod
    finally:
        for p in pods:
            p.kill()
        coord.delete_run()
        coord.close()


def collect(coord: Broker, ledger: Ledger, until: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while ledger.completed < until:
        assert time.monotonic() < deadline, f"{ledger.completed} of {until} chunks recorded"
        for raw in coord.read_results(1000, 0.1):
            ledger.add(raw)


def test_a_worker_exits_0_only_once_the_coordinator_ended_the_run_and_its_job_then_completes(run: Any) -> None:
    coord, ledger, pod = run
    p = pod("w0", cost_us=0)
    collect(coord, ledger, PLAN.chunks)
    assert p.proc.poll() is None  # every chunk done is not the end: only the coordinator ends a run
    coord.end_run()
    code = p.exit_code()
    assert code == 0, p.log.read_text()
    assert next_step(job("worker"), EndedPod(container_name(job("worker")), code)) == COMPLETES


def test_a_terminated_pod_drains_exits_143_and_is_replaced_without_spending_backoff(run: Any) -> None:
    coord, ledger, pod = run
    p = pod("w0")
    p.wait_pid()
    collect(coord, ledger, 3)
    code = p.kubelet_stop(grace_s=60)  # the worker Job's terminationGracePeriodSeconds
    assert code == 143, p.log.read_text()  # not 0: a 0 would end the pod Succeeded, and the Job would stop replacing pods
    worker_job = job("worker")
    assert worker_job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 60
    assert next_step(worker_job, EndedPod(container_name(worker_job), code)) == REPLACED_FREE
    pod("w0-replacement", cost_us=0)  # the Job's replacement takes what the drained worker gave back
    collect(coord, ledger, PLAN.chunks)
    assert ledger.completed == PLAN.chunks


def test_a_killed_pod_exits_137_counts_against_backoff_and_its_chunk_is_taken_over(run: Any) -> None:
    coord, ledger, pod = run
    p = pod("w0")
    p.wait_pid()
    collect(coord, ledger, 3)
    argv = [a.replace("/tmp/ttg-worker.pid", str(p.pid_file)) for a in kill_argv()]  # the exact command kill-pod execs
    said = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert said.returncode == 0 and said.stdout == said.stderr == "", said
    code = p.exit_code()
    assert code == 128 + signal.SIGKILL, p.log.read_text()
    worker_job = job("worker")
    # By the rules, never Succeeded (which would stop the Job from replacing any pod) and never ignored (an OOM-killed
    # worker, also 137, must not be replaced for ever): a failure that counts, and a replacement.
    assert next_step(worker_job, EndedPod(container_name(worker_job), code)) == REPLACED_COUNTED
    assert worker_job["spec"]["backoffLimit"] >= 6
    pod("w0-replacement", cost_us=0)
    collect(coord, ledger, PLAN.chunks)  # the chunk the killed worker held comes back (reclaimed or requeued)


def test_a_worker_whose_chunk_outlasts_the_grace_period_is_sigkilled_and_that_counts(run: Any) -> None:
    pod = run[2]
    p = pod("w0", cost_us=1_000_000)  # 10 s a chunk
    p.wait_pid()
    time.sleep(1.0)  # mid-chunk
    code = p.kubelet_stop(grace_s=0.5)
    assert code == 137, p.log.read_text()
    assert next_step(job("worker"), EndedPod("worker", code)) == REPLACED_COUNTED


def test_in_static_mode_a_finished_block_is_a_done_index_and_a_terminated_one_a_failed_index(run: Any) -> None:
    pod = run[2]
    static = job("worker", mode="static")
    done = pod("s0", static="0/2", cost_us=0)
    assert done.exit_code() == 0, done.log.read_text()
    assert next_step(static, EndedPod("worker", 0)) == INDEX_DONE
    cut = pod("s1", static="1/2")
    cut.wait_pid()
    time.sleep(0.5)
    code = cut.kubelet_stop(grace_s=60)
    assert code == 143, cut.log.read_text()
    assert next_step(static, EndedPod("worker", code)) == INDEX_FAILED  # its block's remaining chunks are reported lost


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (EXIT_TERMINATED, REPLACED_FREE),  # SIGTERM (a DELETE, a drain): the run stays resumable, the replacement resumes it
        (1, JOB_FAILS),  # the verdict failed: judged, a retry would judge the same
        (EXIT_USAGE, JOB_FAILS),  # a usage error repeats on every retry
        (EXIT_ENVIRONMENT, REPLACED_COUNTED),  # the broker unreachable past --broker-wait: retried a few times
        (128 + signal.SIGKILL, REPLACED_COUNTED),  # SIGKILLed (OOM): retried a few times, resumes from the ledger
    ],
)
def test_the_coordinator_job_replaces_a_terminated_coordinator_and_fails_on_a_verdict(code: int, expected: str) -> None:
    coordinator = job("coordinator")
    assert next_step(coordinator, EndedPod(container_name(coordinator), code)) == expected
    assert next_step(coordinator, EndedPod(container_name(coordinator), 0)) == COMPLETES


def test_a_disruption_condition_is_ignored_whatever_the_exit_code() -> None:
    # Eviction, preemption, a drained node set DisruptionTarget; the worker still exits 143 or 137 by then.
    for component in ("worker", "coordinator"):
        j = job(component)
        for code in (137, 143, 3):
            assert next_step(j, EndedPod(container_name(j), code, (("DisruptionTarget", "True"),))) == REPLACED_FREE


def test_the_partition_stalls_the_sweep_only_once_its_forced_reconnect_meets_the_deny_and_the_heal_restores_it(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The Kubernetes partition, step by step, on real brokers. Every client goes through a proxy that, like a
    NetworkPolicy implementation, evaluates its deny on new connections only. The deny alone stalls nothing; the
    command the partition runs in the broker pod (CLIENT KILL TYPE normal; rabbitmqctl close_all_connections) closes
    every established client; each reconnect is then held by the deny (the refused reconnects are the evidence), the
    sweep stalls, and once the deny is lifted it completes with nothing lost."""
    import threading

    from ttg import backends
    from ttg.nemesis.proxy import FaultProxy
    from ttg.run import execute

    server = request.getfixturevalue(f"{backend}_server")
    run_id = f"part{uuid.uuid4().hex[:8]}"
    proxy = FaultProxy("127.0.0.1", int(server.url.rsplit(":", 1)[1].split("/")[0]))
    cfg = load_run_config(
        {
            "backend": backend,
            "broker_url": proxy.url_for(server.url),
            "params": 200_000,
            "chunk": 2_000,
            "workers": 2,
            "cost_us": 50,
            "out": tmp_path,
        },
        env={},
    )
    said: list[str] = []
    # The broker's own counts, read past the proxy: the coordinator, cut off too, reports no progress while denied.
    direct = open_broker(server.url, run_id)
    counts: dict[str, tuple[int, int, int]] = {}
    seen: list[tuple[float, int]] = []  # (monotonic time, chunks done) at each progress report
    marks: dict[str, tuple[float, int]] = {}
    started = threading.Event()

    def partition(at_chunks: int) -> None:
        marks["before"] = (time.monotonic(), at_chunks)
        proxy.deny_new()
        time.sleep(0.5)
        marks["deny"] = (time.monotonic(), seen[-1][1])  # the deny alone: established connections still flow
        said.append(server.cut_clients())
        marks["cut"] = (time.monotonic(), seen[-1][1])
        time.sleep(0.5)  # what was on its way when the connections closed lands
        stats = direct.stats()
        counts["held"] = (stats.completed, stats.queued, stats.inflight)
        time.sleep(1.5)
        stats = direct.stats()
        counts["heal"] = (stats.completed, stats.queued, stats.inflight)
        marks["heal"] = (time.monotonic(), seen[-1][1])
        proxy.admit_new()

    def on_progress(p: Any) -> None:
        seen.append((time.monotonic(), p.chunks_done))
        if not started.is_set() and p.chunks_done >= p.chunks_total * 0.2:
            started.set()
            threading.Thread(target=partition, args=(p.chunks_done,), daemon=True).start()

    try:
        record = execute(cfg, on_progress=on_progress, run_id=run_id)
    finally:
        proxy.close()
        direct.close()
    v = record.verdict
    assert said and "heal" in marks, f"the sweep ended before the partition was healed ({seen[-1]})"
    at_before, at_deny = marks["before"][1], marks["deny"][1]
    cut_t, at_cut = marks["cut"]
    heal_t = marks["heal"][0]
    assert at_deny > at_before, f"the deny alone must stall nothing: {at_before} -> {at_deny} chunks in its first 0.5 s"
    stalled = [n for t, n in seen if cut_t + 0.5 < t < heal_t]
    assert not stalled or max(stalled) <= at_cut + 2, (at_cut, stalled)  # at most what was already on its way
    assert counts["held"] == counts["heal"], f"the broker saw the sweep move while every client was denied: {counts}"
    assert proxy.denied >= 3, f"{proxy.denied} connection attempts met the deny; the coordinator and both workers reconnect"
    assert v.ok and v.lost == 0 and v.dead_lettered == 0 and v.chunks_completed == 100, v
    assert seen[-1][1] == 100 and max(t for t, _ in seen) > heal_t  # the heal restored progress
    # The broker pod runs the same command (the server's cut_clients and the spec share the backend's CUT_CLIENTS).
    words = importlib.import_module(f"ttg.brokers.{backend}").CUT_CLIENTS
    assert " ".join(words) in " ".join(backends.backend(backend).k8s_cut_clients)
