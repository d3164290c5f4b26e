"""The Kubernetes runtime, as the in-cluster coordinator sees it: the run's worker Job and its pods.

The worker Job is created with the rest of the manifests (by ``ttg run --runtime
kubernetes`` or by ``kubectl apply``), so this runtime adopts it rather than
creating it: it lists the Job's pods, deletes one to kill it (grace 0 for
SIGKILL: a crash; the pod's own grace for SIGTERM: the worker finishes its chunk),
reads exit codes from container statuses, and deletes what is left at the end.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from ttg.errors import RuntimeStartError
from ttg.k8s.cluster import RUN_LABEL
from ttg.runtimes import Runtime, WorkerLaunch

_SIGNAL_EXIT = 128  # a container killed by signal N exits with 128 + N


class KubernetesRuntime(Runtime):
    name = "kubernetes"

    def __init__(self, api_client: Any, namespace: str, run_id: str, poll_s: float = 1.0) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.namespace = namespace
        self.run_id = run_id
        self.job = f"ttg-workers-{run_id}"
        self.selector = f"app.kubernetes.io/component=worker,{RUN_LABEL}={run_id}"
        self.poll_s = poll_s  # the collector asks alive() many times a second; the API server is asked at most this often
        self._seen: dict[str, int | None] = {}  # every worker pod ever seen -> exit code (None while running)
        self._pods_cache: list[Any] = []
        self._pods_at = float("-inf")

    def _pods(self) -> list[Any]:
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items)

    def _refresh(self) -> list[Any]:
        if time.monotonic() - self._pods_at < self.poll_s:
            return self._pods_cache
        pods = self._pods()
        for p in pods:
            if self._seen.get(p.metadata.name) != -signal.SIGKILL:  # a pod we killed reads as killed, whatever it reports
                self._seen[p.metadata.name] = _exit_code(p)
        self._pods_cache, self._pods_at = pods, time.monotonic()
        return pods

    def start(self, launches: list[WorkerLaunch]) -> None:
        """The Job exists already (applied with the manifests); check it is there and serves this run."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.batch.read_namespaced_job(self.job, self.namespace)
        except ApiException as e:
            raise RuntimeStartError(f"worker Job {self.job} not found in namespace {self.namespace} ({e.status}); apply the run's manifests first") from None

    def alive(self) -> list[str]:
        return [p.metadata.name for p in self._refresh() if p.metadata.deletion_timestamp is None and p.status.phase in ("Pending", "Running")]

    def kill(self, worker_id: str, sig: int) -> None:
        grace = 0 if sig == signal.SIGKILL else None  # None: the pod's terminationGracePeriodSeconds, after SIGTERM
        self.core.delete_namespaced_pod(worker_id, self.namespace, grace_period_seconds=grace)
        if sig == signal.SIGKILL:
            self._seen[worker_id] = -signal.SIGKILL  # as a local SIGKILL reads; the pod object may vanish before it reports
        self._pods_at = float("-inf")  # the next look goes to the API server

    def exit_codes(self) -> dict[str, int | None]:
        self._refresh()
        return dict(self._seen)

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
        """Delete the pods still running (SIGTERM, then the pod's grace period); the Job object stays for its TTL."""
        for name in self.alive():
            self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=int(grace_s))


def _exit_code(pod: Any) -> int | None:
    for cs in pod.status.container_statuses or []:
        term = cs.state.terminated if cs.state is not None else None
        if term is not None:
            code = int(term.exit_code)
            return -(code - _SIGNAL_EXIT) if code > _SIGNAL_EXIT and (term.reason or "") != "Completed" else code
    return None
