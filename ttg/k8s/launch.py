"""``ttg run --runtime kubernetes`` from outside the cluster: apply the run's manifests, follow its coordinator.

The coordinator runs in the cluster (results on its PVC); this side only
streams the coordinator pod's log back, line by line, and reads the run record
it prints last (``ttg run --json``), so no result crosses a port-forward.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from ttg.config import RunConfig
from ttg.errors import RuntimeStartError
from ttg.k8s.cluster import RUN_LABEL, Cluster, ClusterError, connect
from ttg.k8s.manifests import IMAGE, ManifestSettings, documents
from ttg.record import RunRecord


def record_from_log(text: str) -> RunRecord:
    """The run record the coordinator printed last: the final top-level JSON object of its log."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line == "{"]
    for i in reversed(starts):
        try:
            doc = json.loads("\n".join(lines[i:]))
            return RunRecord.from_dict(doc)
        except (json.JSONDecodeError, TypeError, KeyError, AttributeError):  # not JSON, or JSON that is not a run record
            continue
    raise ClusterError("the coordinator's log holds no run record: it failed before judging; see `kubectl logs` of its pod")


def deploy(cfg: RunConfig, run_id: str, context: str | None = None) -> Cluster:
    """Apply the run's manifests (broker, coordinator, worker Job) to the cluster; returns the cluster handle."""
    cluster = Cluster(connect(context), cfg.namespace)
    cluster.apply(documents(ManifestSettings(run_id, cfg, namespace=cfg.namespace, image=cfg.image or IMAGE)))
    return cluster


def follow_log(cluster: Cluster, pod: str, on_line: Callable[[str], None]) -> None:
    """Call ``on_line`` with each line of the pod's log as it is written, until the pod's container ends."""
    from kubernetes import client, watch

    core = client.CoreV1Api(cluster.api_client)
    for line in watch.Watch().stream(core.read_namespaced_pod_log, pod, cluster.namespace, follow=True):
        on_line(str(line))


def launch(cfg: RunConfig, run_id: str, on_line: Callable[[str], None], timeout_s: float = 600.0, context: str | None = None) -> RunRecord:
    cluster = deploy(cfg, run_id, context)
    pod = coordinator_pod(cluster, run_id, timeout_s)
    lines: list[str] = []

    def keep(line: str) -> None:
        lines.append(line)
        on_line(line)

    follow_log(cluster, pod, keep)
    return record_from_log("\n".join(lines))  # the streamed lines already hold the record: no second read of the log


def coordinator_pod(cluster: Cluster, run_id: str, timeout_s: float) -> str:
    """The coordinator pod's name once it has started (its log can be followed)."""
    from kubernetes import client

    core = client.CoreV1Api(cluster.api_client)
    selector = f"app.kubernetes.io/component=coordinator,{RUN_LABEL}={run_id}"
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(cluster.namespace, label_selector=selector).items
        for p in pods:
            last = p
            if p.status.phase in ("Running", "Succeeded", "Failed"):
                return str(p.metadata.name)
        time.sleep(1.0)
    state = f"{last.metadata.name} is {last.status.phase}" if last is not None else "no coordinator pod was created"
    raise RuntimeStartError(f"the coordinator did not start within {timeout_s:.0f}s: {state}; check `kubectl -n {cluster.namespace} describe pods`")
