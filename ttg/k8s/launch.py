"""``ttg run --runtime kubernetes`` from outside the cluster: apply the run's manifests, follow its coordinator Job.

The coordinator runs in the cluster (results on its PVC). This side applies the run so that the coordinator Job owns
every other object of it (created suspended, the rest created with an ownerReference to it, then started), follows
the Job's pods' logs in turn (a disrupted coordinator is replaced and resumes: its successor's log follows), and, once
the Job has finished, reads the run record from the ConfigMap the coordinator saved it in (the log's last JSON
object when there is none), so no result crosses a port-forward and no record depends on one log stream.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ttg.config import RunConfig
from ttg.errors import RuntimeStartError
from ttg.k8s.cluster import Cluster, ClusterError, connect, job_state
from ttg.k8s.manifests import IMAGE, ManifestSettings, documents
from ttg.k8s.names import coordinator_job, record_configmap, selector
from ttg.record import RunRecord

log = logging.getLogger(__name__)


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


def load_record(api_client: Any, namespace: str, run_id: str) -> RunRecord | None:
    """The record the coordinator saved, or None when there is none (yet)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        cm = client.CoreV1Api(api_client).read_namespaced_config_map(record_configmap(run_id), namespace)
    except ApiException as e:
        if e.status == 404:
            return None
        raise ClusterError(f"reading the run record of {run_id} failed: {e.status} {e.reason}") from None
    text = (cm.data or {}).get("record.json")
    if not text:
        return None
    try:
        return RunRecord.from_dict(json.loads(text))
    except (json.JSONDecodeError, TypeError, KeyError, AttributeError) as e:
        raise ClusterError(f"ConfigMap {record_configmap(run_id)} holds no readable run record ({e}); see the coordinator's log") from None


def owned_documents(docs: list[dict[str, Any]], run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Split the rendered run into (the coordinator Job, created suspended; what comes before it; what it will own).

    The Namespace is shared by runs and never owned."""
    name = coordinator_job(run_id)

    def is_coordinator(d: dict[str, Any]) -> bool:
        return bool(d["kind"] == "Job" and d["metadata"]["name"] == name)

    job = copy.deepcopy(next(d for d in docs if is_coordinator(d)))
    job["spec"]["suspend"] = True  # no pod until everything it needs (and owns) exists
    before = [d for d in docs if d["kind"] == "Namespace"]
    return job, before, [d for d in docs if d["kind"] != "Namespace" and not is_coordinator(d)]


def is_results_volume(doc: dict[str, Any]) -> bool:
    return bool(doc["kind"] == "PersistentVolumeClaim" and doc["metadata"]["name"].startswith("ttg-results-"))


def with_owner(doc: dict[str, Any], owner: dict[str, str]) -> dict[str, Any]:
    """``doc`` owned by ``owner`` (the coordinator Job): the garbage collector deletes it when the Job goes
    (https://kubernetes.io/docs/concepts/architecture/garbage-collection/#owners-dependents); same namespace only."""
    doc = copy.deepcopy(doc)
    ref = {"apiVersion": "batch/v1", "kind": "Job", "name": owner["name"], "uid": owner["uid"], "blockOwnerDeletion": False}
    doc["metadata"]["ownerReferences"] = [ref]
    return doc


def deploy(cfg: RunConfig, run_id: str, context: str | None = None) -> Cluster:
    """Apply the run (broker, coordinator, worker Job), all owned by the coordinator Job; returns the cluster handle."""
    from kubernetes import client

    cluster = Cluster(connect(context), cfg.namespace)
    docs = documents(ManifestSettings(run_id, cfg, namespace=cfg.namespace, image=cfg.image or IMAGE))
    job, before, owned = owned_documents(docs, run_id)
    cluster.apply(before)
    cluster.apply([job])
    batch = client.BatchV1Api(cluster.api_client)
    created = cluster.call("reading the coordinator Job", batch.read_namespaced_job, job["metadata"]["name"], cfg.namespace)
    owner = {"name": created.metadata.name, "uid": created.metadata.uid}
    # The results volume holds the only copy of results.npy: it is not owned, so the Job's TTL never takes it;
    # `ttg k8s down RUN_ID` removes it with the rest.
    cluster.apply([d if is_results_volume(d) else with_owner(d, owner) for d in owned])
    cluster.call("starting the coordinator Job", batch.patch_namespaced_job, owner["name"], cfg.namespace, {"spec": {"suspend": False}})
    return cluster


@dataclass
class JobFollower:
    """Follows a coordinator Job: each of its pods' logs in creation order, until the Job has finished."""

    cluster: Cluster
    run_id: str
    on_line: Callable[[str], None]
    poll_s: float = 2.0
    followed: list[str] = field(default_factory=list)  # pod names whose logs were streamed
    lines: list[str] = field(default_factory=list)  # the last followed pod's lines (its record, if it printed one)

    def follow(self, timeout_s: float) -> RunRecord:
        from kubernetes import client

        core, batch = client.CoreV1Api(self.cluster.api_client), client.BatchV1Api(self.cluster.api_client)
        name, ns = coordinator_job(self.run_id), self.cluster.namespace
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.cluster.call("reading the coordinator Job", batch.read_namespaced_job, name, ns)
            pod = self._next_pod(core)
            if pod is not None:
                self._stream(pod)
                continue
            state = job_state(job)
            if state != "running":
                return self._record(state)
            if time.monotonic() > deadline:
                raise RuntimeStartError(f"coordinator Job {name} did not finish within {timeout_s:.0f}s; `ttg k8s status` shows where it is")
            time.sleep(self.poll_s)

    def _next_pod(self, core: Any) -> str | None:
        """The oldest coordinator pod not followed yet whose container has started (its log can be read)."""
        pods = core.list_namespaced_pod(self.cluster.namespace, label_selector=selector(self.run_id, "coordinator")).items
        for p in sorted(pods, key=lambda p: p.metadata.creation_timestamp or 0):
            if p.metadata.name not in self.followed and p.status.phase in ("Running", "Succeeded", "Failed"):
                return str(p.metadata.name)
        return None

    def _stream(self, pod: str) -> None:
        from kubernetes import client, watch

        if self.followed:
            self.on_line(f"(coordinator pod {self.followed[-1]} ended; its replacement {pod} resumes the run)")
        self.followed.append(pod)
        self.lines = []
        core = client.CoreV1Api(self.cluster.api_client)
        try:
            for line in watch.Watch().stream(core.read_namespaced_pod_log, pod, self.cluster.namespace, follow=True):
                self.lines.append(str(line))
                self.on_line(str(line))
        except Exception as e:  # a broken stream loses lines, not the record (the ConfigMap keeps it)
            log.warning("the log stream of %s broke (%s); the run record is read from its ConfigMap", pod, e)

    def _record(self, state: str) -> RunRecord:
        record = load_record(self.cluster.api_client, self.cluster.namespace, self.run_id)
        if record is not None:
            return record
        try:
            return record_from_log("\n".join(self.lines))
        except ClusterError:
            job, ns = coordinator_job(self.run_id), self.cluster.namespace
            ended = "failed" if state == "failed" else "completed"
            last = self.followed[-1] if self.followed else "any pod"
            raise ClusterError(
                f"coordinator Job {job} {ended} and left no run record (no ConfigMap, none in the log of {last}); see `kubectl -n {ns} logs job/{job}`"
            ) from None


def launch(cfg: RunConfig, run_id: str, on_line: Callable[[str], None], timeout_s: float | None = None, context: str | None = None) -> RunRecord:
    cluster = deploy(cfg, run_id, context)
    return JobFollower(cluster, run_id, on_line).follow(timeout_s if timeout_s is not None else cfg.timeout_s + 1_800)
