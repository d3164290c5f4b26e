"""Chaos Toolkit activities for a sweep on Kubernetes (experiments/kubernetes/): the sweep side only.

The faults themselves come from chaostoolkit-kubernetes (``terminate_pods`` on
the worker label, NetworkPolicy changes for the partition); these functions
deploy the run (the in-cluster coordinator and its worker Job), follow the
coordinator's log, and judge it. They need a cluster: on a machine without one
they fail with the reason, and ``chaos validate`` is all that runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import threading
import time
from typing import Any

from chaoslib.exceptions import ActivityFailed

from ttg.chaos.session import settings_from
from ttg.config import load_run_config
from ttg.errors import TTGError
from ttg.k8s.cluster import RUN_LABEL, Cluster, connect
from ttg.k8s.launch import coordinator_pod, deploy, follow_log, record_from_log
from ttg.k8s.manifests import ManifestSettings, documents
from ttg.record import RunRecord
from ttg.run import PROGRESS_LINE_EVERY_S

__all__ = [
    "heal_broker_partition",
    "kubernetes_sweep_verdict",
    "progress_stalled",
    "start_kubernetes_sweep",
    "stop_kubernetes_sweep",
    "wait_for_progress",
    "worker_pods_seen",
]

_PROGRESS = re.compile(r"progress (\d+)/(\d+) chunks")
DEFAULTS = {"params": 2_000_000, "chunk": 10_000, "workers": 4, "cost_us": 5.0}


@dataclasses.dataclass
class _Follower:
    """Follows one run's coordinator log and watches its worker pods on a thread."""

    cluster: Cluster
    run_id: str
    lines: list[str] = dataclasses.field(default_factory=list)
    progress_at: list[tuple[float, int]] = dataclasses.field(default_factory=list)  # (monotonic, chunks done) per progress line
    pods_seen: dict[str, float] = dataclasses.field(default_factory=dict)  # name -> first seen (monotonic)
    pods_gone: list[str] = dataclasses.field(default_factory=list)  # seen, then gone while the run went on
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    error: str = ""

    def start(self, timeout_s: float) -> None:
        pod = coordinator_pod(self.cluster, self.run_id, timeout_s)
        threading.Thread(target=self._follow, args=(pod,), daemon=True).start()
        threading.Thread(target=self._watch_pods, daemon=True).start()

    def _follow(self, pod: str) -> None:
        try:
            follow_log(self.cluster, pod, self.add_line)
        except Exception as e:  # reported by the probe that waits for the run
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.done.set()

    def _watch_pods(self) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.cluster.api_client)
        selector = f"app.kubernetes.io/component=worker,{RUN_LABEL}={self.run_id}"
        while not self.done.is_set():
            try:
                names = {p.metadata.name for p in core.list_namespaced_pod(self.cluster.namespace, label_selector=selector).items}
            except Exception:  # a blip of the API server: look again
                names = set(self.pods_seen)
            for n in names:
                self.pods_seen.setdefault(n, time.monotonic())
            self.pods_gone += [n for n in self.pods_seen if n not in names and n not in self.pods_gone]
            time.sleep(1.0)

    def add_line(self, line: str) -> None:
        self.lines.append(line)
        m = _PROGRESS.search(line)
        if m:
            self.progress_at.append((time.monotonic(), int(m.group(1))))

    def longest_stall_s(self) -> float:
        """How long the sweep stood still: progress lines repeating one chunk count, or a silence longer than the
        coordinator's line interval (a coordinator cut off from the broker prints nothing until it reaches it again)."""
        longest, start = 0.0, None
        for (t0, d0), (t1, d1) in itertools.pairwise(self.progress_at):
            longest = max(longest, t1 - t0 - PROGRESS_LINE_EVERY_S)
            if d1 == d0:
                start = t0 if start is None else start
                longest = max(longest, t1 - start)
            else:
                start = None
        return longest

    def progress(self) -> float:
        for line in reversed(self.lines):
            m = _PROGRESS.search(line)
            if m:
                return 100.0 * int(m.group(1)) / max(1, int(m.group(2)))
        return 0.0

    def record(self, timeout_s: float) -> RunRecord:
        if not self.done.wait(timeout_s):
            raise ActivityFailed(f"the run did not finish within {timeout_s:g}s; `ttg k8s status` shows where it is")
        try:
            return record_from_log("\n".join(self.lines))
        except TTGError as e:
            raise ActivityFailed(f"{e} {self.error}") from None


_state: dict[str, _Follower] = {}


def _deploy(configuration: dict[str, Any] | None, run_id: str, timeout_s: float) -> _Follower:
    conf = configuration or {}
    try:
        cfg = load_run_config(
            {**DEFAULTS, **settings_from(conf, {}), "runtime": "kubernetes", "namespace": conf.get("namespace", "ttg"), "image": conf.get("image") or ""}
        )
        follower = _Follower(deploy(cfg, run_id, conf.get("kube_context")), run_id)
        follower.start(timeout_s)
    except TTGError as e:
        raise ActivityFailed(f"could not deploy run {run_id}: {e}") from None
    return follower


def start_kubernetes_sweep(run_id: str, timeout_s: float = 600.0, configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Deploy the run (broker, coordinator, worker Job) and follow it in the background."""
    _state["sweep"] = _deploy(configuration, run_id, timeout_s)
    return {"run_id": run_id}


def wait_for_progress(percent: float = 30.0, timeout_s: float = 600.0) -> float:
    """Block until the coordinator reports ``percent`` % of the chunks done; returns the progress reached."""
    follower = _state.get("sweep")
    if follower is None:
        raise ActivityFailed("no sweep is running: put start_kubernetes_sweep first in the method")
    deadline = time.monotonic() + timeout_s
    while follower.progress() < float(percent):
        if follower.done.is_set() or time.monotonic() > deadline:
            raise ActivityFailed(f"the run ended or stalled at {follower.progress():.0f}% before reaching {percent}%")
        time.sleep(0.5)
    return follower.progress()


def kubernetes_sweep_verdict(run_id: str, timeout_s: float = 1800.0, configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """The chaos run's verdict after the method; before it, the verdict of a fault-free baseline run (then removed)."""
    follower = _state.get("sweep")
    phase = "chaos"
    if follower is None:
        phase, follower = "baseline", _deploy(configuration, f"{run_id}-baseline", timeout_s)
    record = follower.record(timeout_s)
    if phase == "baseline":
        follower.cluster.down(follower.run_id)
    v = record.verdict
    return {"phase": phase, "run_id": record.run_id, "ok": v.ok, "lost": v.lost, "lost_chunk_ids": v.lost_chunk_ids[:50],
            "duplicates": v.duplicates, "dead_lettered": v.dead_lettered, "dead_letter_ids": v.dead_letter_ids[:50],
            "mismatches": v.mismatches, "checksum_ok": v.checksum_ok, "wall_s": record.wall_s}  # fmt: skip


def worker_pods_seen() -> dict[str, Any]:
    """Worker pods seen during the chaos run, and those that went away while it ran (the killed ones)."""
    follower = _state.get("sweep")
    if follower is None:
        return {"phase": "baseline", "faults": []}
    gone = list(follower.pods_gone)
    # The shape of fault_evidence's output, so faults_took_effect judges it: one kill-pod fault per pod that went away.
    faults = [{"kind": "kill-pod", "note": "", "evidence": f"pod {name} went away mid-run"} for name in gone]
    return {"phase": "chaos", "faults": faults, "pods_seen": sorted(follower.pods_seen)}


def progress_stalled(min_s: float = 4.0) -> dict[str, Any]:
    """Proof the partition cut the broker off: the coordinator's progress stood still for ``min_s`` or more."""
    follower = _state.get("sweep")
    if follower is None:
        return {"phase": "baseline", "faults": []}
    stall = follower.longest_stall_s()
    evidence = f"no chunk completed for {stall:.1f} s while the broker was cut off" if stall >= float(min_s) else ""
    return {"phase": "chaos", "faults": [{"kind": "partition-broker", "note": "", "evidence": evidence}], "longest_stall_s": round(stall, 1)}


def heal_broker_partition(run_id: str, configuration: dict[str, Any] | None = None) -> str:
    """Undo the partition: remove the deny-all policy, put the run's own broker policy back. Safe to run twice."""
    from kubernetes.client.exceptions import ApiException

    conf = configuration or {}
    try:
        cluster = Cluster(connect(conf.get("kube_context")), conf.get("namespace", "ttg"))
    except TTGError as e:
        raise ActivityFailed(str(e)) from None
    from kubernetes import client

    net = client.NetworkingV1Api(cluster.api_client)
    try:
        net.delete_namespaced_network_policy("chaostoolkit-deny-all-ingress", cluster.namespace)
    except ApiException as e:
        if e.status != 404:
            raise ActivityFailed(f"could not remove the deny policy: {e.reason}") from None
    cfg = load_run_config({**DEFAULTS, **settings_from(conf, {}), "runtime": "kubernetes"})
    policy = next(d for d in documents(ManifestSettings(run_id, cfg, namespace=cluster.namespace)) if d["kind"] == "NetworkPolicy")
    try:
        net.create_namespaced_network_policy(cluster.namespace, policy)
    except ApiException as e:
        if e.status != 409:
            raise ActivityFailed(f"could not restore the broker policy: {e.reason}") from None
    return f"partition of run {run_id} healed"


def stop_kubernetes_sweep(run_id: str, configuration: dict[str, Any] | None = None) -> list[str]:
    """The rollback: delete every TTG object of the run and of its baseline. Safe to run twice."""
    _state.pop("sweep", None)
    conf = configuration or {}
    try:
        cluster = Cluster(connect(conf.get("kube_context")), conf.get("namespace", "ttg"))
        return cluster.down(run_id) + cluster.down(f"{run_id}-baseline")
    except TTGError as e:
        raise ActivityFailed(str(e)) from None
