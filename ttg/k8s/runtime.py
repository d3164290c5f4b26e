"""The Kubernetes runtime, as the in-cluster coordinator sees it: the run's worker Job and its pods.

The worker Job is created with the rest of the manifests (by ``ttg run --runtime kubernetes`` or by ``kubectl
apply``), so this runtime adopts it rather than creating it. Its two pod faults are the two ways a pod really ends:

* ``terminate-pod`` (SIGTERM): an API DELETE with the pod's own grace period. The kubelet sends SIGTERM to the
  container's PID 1 (tini, which passes it on to the worker), waits up to ``terminationGracePeriodSeconds``, then
  SIGKILLs (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination). The worker finishes
  its chunk, gives back what it prefetched, and exits 143: the Job's podFailurePolicy replaces the pod, no backoff spent.
* ``kill-pod`` (SIGKILL): the worker process dies without a chance to ack. A DELETE cannot do that, not even with
  ``gracePeriodSeconds: 0``: the kubelet still sends SIGTERM first. So the coordinator SIGKILLs the worker process
  through the API's exec (``pods/exec``): tini, PID 1, sees its child die and exits 128 + 9 = 137. (A container's
  PID 1 cannot be SIGKILLed from inside its own PID namespace: the kernel protects a namespace's init, which is why the
  image runs tini as PID 1 and the worker as its child.) The pod fails; the Job counts it against ``backoffLimit``
  and replaces it.

Exit statuses are read from the pods' container statuses, never assumed from the fault that was sent.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

from ttg.errors import FaultNotInjected, RuntimeStartError
from ttg.k8s.names import selector, worker_job
from ttg.k8s.podwatch import PodWatch
from ttg.runtimes import Runtime, WorkerLaunch

log = logging.getLogger(__name__)
WORKER_CONTAINER = "worker"
WORKER_PID_FILE = "/tmp/ttg-worker.pid"  # written by `ttg worker --pid-file` (the manifests pass it)


def kill_argv(pid_file: str = WORKER_PID_FILE) -> list[str]:
    """The command the kill-pod fault runs in the worker container: SIGKILL the worker process (tini's child)."""
    return ["sh", "-c", f'kill -s KILL "$(cat {pid_file})"']


ExecFn = Callable[[str, Sequence[str]], str]  # (pod, argv) -> what the command wrote


class KubernetesRuntime(Runtime):
    name = "kubernetes"
    owns_workers = False  # pods belong to their Job: a replaced coordinator resumes with them

    def __init__(self, api_client: Any, namespace: str, run_id: str, poll_s: float = 1.0, exec_in_pod: ExecFn | None = None) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.namespace = namespace
        self.run_id = run_id
        self.job = worker_job(run_id)
        self.poll_s = poll_s  # wait()'s pause between looks at the watched pods
        self.exec_in_pod = exec_in_pod or self._exec
        # The collector asks alive() many times a second: it reads this watch's cache, never the API server.
        self.watch = PodWatch(self.core, namespace, selector(run_id, "worker"))

    def start(self, launches: list[WorkerLaunch]) -> None:
        """The Job exists already (applied with the manifests); check it is there and serves this run."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.batch.read_namespaced_job(self.job, self.namespace)
        except ApiException as e:
            raise RuntimeStartError(f"worker Job {self.job} not found in namespace {self.namespace} ({e.status}); apply the run's manifests first") from None

    def alive(self) -> list[str]:
        gone = self.watch.deleted()
        return [
            p.metadata.name
            for p in self.watch.pods()
            if p.metadata.name not in gone and p.metadata.deletion_timestamp is None and p.status is not None and p.status.phase in ("Pending", "Running")
        ]

    def running(self) -> list[str]:
        """The live worker pods whose containers have started (an exec reaches them)."""
        phases = {p.metadata.name: p.status.phase for p in self.watch.pods() if p.status is not None}
        return [name for name in self.alive() if phases.get(name) == "Running"]

    def kill(self, worker_id: str, sig: int) -> None:
        from kubernetes.client.exceptions import ApiException

        if sig == signal.SIGKILL:
            said = self.exec_in_pod(worker_id, kill_argv()).strip()
            if said:  # kill and sh are silent when the signal is sent; anything else is why it was not
                raise FaultNotInjected(f"could not SIGKILL the worker in pod {worker_id}: {said[:200]}")
        elif sig == signal.SIGTERM:
            try:  # None: the pod's terminationGracePeriodSeconds, after SIGTERM
                self.core.delete_namespaced_pod(worker_id, self.namespace, grace_period_seconds=None)
            except ApiException as e:
                raise FaultNotInjected(f"could not delete pod {worker_id}: {e.status} {e.reason}") from None
        else:
            raise FaultNotInjected(f"a pod takes SIGKILL (kill-pod) or SIGTERM (terminate-pod), not {signal.Signals(sig).name}")

    def _exec(self, pod: str, argv: Sequence[str]) -> str:
        """Run ``argv`` in the pod's worker container through the API (pods/exec); returns its output."""
        from kubernetes.client.exceptions import ApiException

        try:
            out = exec_in_pod(self.core, self.namespace, pod, WORKER_CONTAINER, argv, timeout_s=30)
        except ApiException as e:
            raise FaultNotInjected(f"exec in pod {pod} refused: {e.status} {e.reason}") from None
        except Exception as e:  # the container may die under the exec it ran: the pod's status tells
            log.info("exec in pod %s ended with %s: %s (the killed container closes it)", pod, type(e).__name__, e)
            return ""
        return out

    def exit_codes(self) -> dict[str, int | None]:
        return {p.metadata.name: container_exit_code(p) for p in self.watch.pods()}

    def describe_failure(self, worker_id: str) -> str:
        try:
            text = self.core.read_namespaced_pod_log(worker_id, self.namespace, tail_lines=3)
        except Exception as e:  # the pod may be gone; its absence is the description
            return f"(no log: {e})"
        return " | ".join(str(text).strip().splitlines()) or "(no output)"

    def wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(self.poll_s)
        return True

    def stop(self, grace_s: float) -> None:
        """Delete the pods still running (SIGTERM, then the pod's grace period); the Job object stays for its TTL.

        Called only once the run has ended (the workers then exit 0 by themselves): pods outlive an interrupted coordinator."""
        from kubernetes.client.exceptions import ApiException

        for name in self.alive():
            try:
                self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=int(grace_s))
            except ApiException as e:
                if e.status != 404:  # already gone
                    raise


def exec_in_pod(core: Any, namespace: str, pod: str, container: str, argv: Sequence[str], timeout_s: int = 60) -> str:
    """Run ``argv`` in one container of a pod through the API's exec (a websocket); returns what it wrote.
    ApiException when the API server refuses it."""
    from kubernetes.stream import stream

    out = stream(core.connect_get_namespaced_pod_exec, pod, namespace, container=container, command=list(argv),
                 stderr=True, stdout=True, stdin=False, tty=False, _request_timeout=timeout_s)  # fmt: skip
    return str(out or "")


def container_exit_code(pod: Any, container: str = WORKER_CONTAINER) -> int | None:
    """The exit code the worker container's status reports (None while it runs): 0, 143, 137 for a SIGKILL..."""
    for cs in (pod.status.container_statuses if pod.status is not None else None) or []:
        term = cs.state.terminated if cs.state is not None else None
        if cs.name == container and term is not None:
            return int(term.exit_code)
    return None
