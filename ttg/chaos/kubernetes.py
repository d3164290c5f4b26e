"""Chaos Toolkit activities for a sweep on Kubernetes (experiments/kubernetes/).

They deploy the run (the in-cluster coordinator Job owning its broker and worker Job), follow the coordinator Job's
log on a thread, inject the faults, judge, and prove each fault took effect while the sweep was still running. Every
call goes through the experiment's ``kube_context`` (chaostoolkit-kubernetes' own actions would use the current one).

* ``kill_worker_pod``: SIGKILL the worker process through exec (the pod fails with 137); ``terminate_worker_pod``: a
  DELETE with the pod's grace (SIGTERM: the worker drains and exits 143). Both are the runtime's own (ttg.k8s.runtime).
* ``partition_broker``: swap the run's allow policy for a deny-all on the broker pod, then close every client
  connection from inside the broker pod. NetworkPolicy implementations (kube-network-policies, Calico, Cilium)
  enforce policy on new connections, through conntrack; TTG's connections are long-lived, so without the second step
  the deny would stall nothing. Each client's reconnect then meets the policy.

Evidence is recorded at injection (the completed-chunk count the coordinator last reported) and read back after
(the pod's exit status, the stall, the refused reconnects); a fault that came after the last chunk proves nothing
and fails the experiment. Without a cluster these fail with the reason; ``chaos validate`` is all that runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
import signal
import threading
import time
from typing import Any

from chaoslib.exceptions import ActivityFailed

from ttg import backends
from ttg.chaos.session import settings_from
from ttg.config import RunConfig, load_run_config
from ttg.errors import TTGError
from ttg.k8s.cluster import Cluster, connect
from ttg.k8s.launch import JobFollower, deploy, with_owner
from ttg.k8s.manifests import ManifestSettings, documents
from ttg.k8s.names import coordinator_job, labels
from ttg.k8s.runtime import KubernetesRuntime, exec_in_pod
from ttg.record import RunRecord
from ttg.runtimes import describe_exit

__all__ = [
    "heal_broker_partition",
    "kill_worker_pod",
    "kubernetes_sweep_verdict",
    "partition_broker",
    "pod_faults_took_effect",
    "progress_stalled",
    "start_kubernetes_sweep",
    "stop_kubernetes_sweep",
    "terminate_worker_pod",
    "wait_for_progress",
]

_PROGRESS = re.compile(r"progress (\d+)/(\d+) chunks")
_REFUSED = re.compile(r"unreachable")  # the coordinator's "broker unreachable, retrying" lines: one per refused reconnect
LINE_EVERY_S = 1.0  # the in-cluster coordinator prints a progress line this often (ttg run --in-cluster)
# Long enough on Kind for a fault to land mid-sweep: 2M parameters at 150 µs each, about 75 s on four free cores.
DEFAULTS = {"params": 2_000_000, "chunk": 10_000, "workers": 4, "cost_us": 150.0}
EXPECTED_EXIT = {"kill-pod": 128 + signal.SIGKILL, "terminate-pod": 128 + signal.SIGTERM}


@dataclasses.dataclass(frozen=True)
class Injection:
    """A fault as it was injected: where the sweep stood then, and what the injecting command said."""

    kind: str
    target: str
    at: float  # monotonic
    chunks_done: int
    chunks_total: int
    said: str = ""

    @property
    def mid_sweep(self) -> bool:
        return self.chunks_total > 0 and self.chunks_done < self.chunks_total


def pod_fault_evidence(inj: Injection, exit_code: int | None) -> str:
    """Proof a pod fault took effect mid-sweep, or "" (the experiment then fails): the pod's container ended with the
    status the fault produces (137 for kill-pod, 143 for terminate-pod), and the sweep was not over when it came."""
    if not inj.mid_sweep:
        return ""
    if exit_code != EXPECTED_EXIT[inj.kind]:
        return ""  # still running, or it ended otherwise (0: the run had ended before the signal reached it)
    return f"pod {inj.target} exited with status {describe_exit(exit_code)}, injected at {inj.chunks_done}/{inj.chunks_total} chunks"


def partition_evidence(inj: Injection, stall_s: float, refused: int, min_stall_s: float) -> str:
    """Proof the partition cut the broker off mid-sweep, or "": progress stood still for ``min_stall_s`` or more."""
    if not inj.mid_sweep or stall_s < min_stall_s:
        return ""
    return (
        f"no chunk completed for {stall_s:.1f} s after the deny policy and the forced reconnect ({inj.said or 'clients closed'}); "
        f"the coordinator's reconnects refused {refused} time(s); cut at {inj.chunks_done}/{inj.chunks_total} chunks"
    )


def longest_stall_s(progress: list[tuple[float, int]], line_every_s: float = LINE_EVERY_S, since: float = float("-inf")) -> float:
    """How long the sweep stood still after ``since``: progress lines repeating one chunk count, or a silence longer than
    the coordinator's line interval (a coordinator cut off from the broker prints nothing until it reaches it again)."""
    points = [(t, d) for t, d in progress if t >= since]
    longest, start = 0.0, None
    for (t0, d0), (t1, d1) in itertools.pairwise(points):
        longest = max(longest, t1 - t0 - line_every_s)
        if d1 == d0:
            start = t0 if start is None else start
            longest = max(longest, t1 - start)
        else:
            start = None
    return longest


@dataclasses.dataclass
class _Sweep:
    """One run on the cluster: its coordinator Job followed on a thread, its worker pods watched, its faults."""

    cluster: Cluster
    cfg: RunConfig
    run_id: str
    lines: list[str] = dataclasses.field(default_factory=list)
    progress_at: list[tuple[float, int]] = dataclasses.field(default_factory=list)  # (monotonic, chunks done)
    refused_at: list[float] = dataclasses.field(default_factory=list)
    chunks_total: int = 0
    injections: list[Injection] = dataclasses.field(default_factory=list)
    record: RunRecord | None = None
    error: str = ""
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    runtime: KubernetesRuntime | None = None

    def start(self, timeout_s: float) -> None:
        self.runtime = KubernetesRuntime(self.cluster.api_client, self.cluster.namespace, self.run_id)
        threading.Thread(target=self._follow, args=(timeout_s,), name="ttg-k8s-follow", daemon=True).start()

    def _follow(self, timeout_s: float) -> None:
        try:
            self.record = JobFollower(self.cluster, self.run_id, self.add_line).follow(timeout_s)
        except Exception as e:  # reported by the probe that waits for the run
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.done.set()

    def add_line(self, line: str) -> None:
        self.lines.append(line)
        now = time.monotonic()
        if m := _PROGRESS.search(line):
            self.progress_at.append((now, int(m.group(1))))
            self.chunks_total = int(m.group(2))
        elif _REFUSED.search(line):
            self.refused_at.append(now)

    @property
    def chunks_done(self) -> int:
        return self.progress_at[-1][1] if self.progress_at else 0

    def percent(self) -> float:
        return 100.0 * self.chunks_done / self.chunks_total if self.chunks_total else 0.0

    def inject(self, kind: str, target: str, said: str = "") -> Injection:
        inj = Injection(kind, target, time.monotonic(), self.chunks_done, self.chunks_total, said)
        self.injections.append(inj)
        return inj

    def wait_record(self, timeout_s: float) -> RunRecord:
        if not self.done.wait(timeout_s):
            raise ActivityFailed(f"the run did not finish within {timeout_s:g}s; `ttg k8s status` shows where it is")
        if self.record is None:
            raise ActivityFailed(f"the run left no record: {self.error}")
        return self.record


_state: dict[str, _Sweep] = {}


def _config(configuration: dict[str, Any] | None) -> RunConfig:
    conf = configuration or {}
    given = {**DEFAULTS, **settings_from(conf, {}), "runtime": "kubernetes", "namespace": conf.get("namespace", "ttg"), "image": conf.get("image") or ""}
    return load_run_config(given)


def _cluster(configuration: dict[str, Any] | None) -> Cluster:
    conf = configuration or {}
    try:
        return Cluster(connect(conf.get("kube_context")), conf.get("namespace", "ttg"))
    except TTGError as e:
        raise ActivityFailed(str(e)) from None


def _deploy(configuration: dict[str, Any] | None, run_id: str, timeout_s: float) -> _Sweep:
    try:
        cfg = _config(configuration)
        sweep = _Sweep(deploy(cfg, run_id, (configuration or {}).get("kube_context")), cfg, run_id)
        sweep.start(timeout_s)
    except TTGError as e:
        raise ActivityFailed(f"could not deploy run {run_id}: {e}") from None
    return sweep


def _sweep() -> _Sweep:
    sweep = _state.get("sweep")
    if sweep is None:
        raise ActivityFailed("no sweep is running: put start_kubernetes_sweep first in the method")
    return sweep


def start_kubernetes_sweep(run_id: str, timeout_s: float = 3600.0, configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Deploy the run (broker, coordinator, worker Job) and follow it in the background."""
    _state["sweep"] = _deploy(configuration, run_id, timeout_s)
    return {"run_id": run_id}


def wait_for_progress(percent: float = 30.0, timeout_s: float = 900.0) -> float:
    """Block until the coordinator reports ``percent`` % of the chunks done; returns the progress reached."""
    sweep = _sweep()
    deadline = time.monotonic() + timeout_s
    while sweep.percent() < float(percent):
        if sweep.done.is_set() or time.monotonic() > deadline:
            raise ActivityFailed(f"the run ended or stalled at {sweep.percent():.0f}% before reaching {percent}%")
        time.sleep(0.2)
    return sweep.percent()


def _pod_fault(kind: str, sig: int, target: str | None) -> dict[str, Any]:
    sweep = _sweep()
    assert sweep.runtime is not None
    alive = sorted(sweep.runtime.running())  # exec needs a started container: not a Pending pod
    if not alive:
        raise ActivityFailed(f"{kind}: no worker pod of run {sweep.run_id} is running")
    pod = target if target else random.choice(alive)
    inj = sweep.inject(kind, pod)
    try:
        sweep.runtime.kill(pod, sig)
    except TTGError as e:
        raise ActivityFailed(f"{kind} of {pod} failed: {e}") from None
    return {"kind": kind, "pod": pod, "chunks_done": inj.chunks_done, "chunks": inj.chunks_total}


def kill_worker_pod(target: str | None = None) -> dict[str, Any]:
    """kill-pod: SIGKILL the worker process in one worker pod (a random running one, or ``target``) through exec."""
    return _pod_fault("kill-pod", signal.SIGKILL, target)


def terminate_worker_pod(target: str | None = None) -> dict[str, Any]:
    """terminate-pod: delete one worker pod with its grace period (SIGTERM: the worker drains and exits 143)."""
    return _pod_fault("terminate-pod", signal.SIGTERM, target)


def pod_faults_took_effect() -> dict[str, Any]:
    """Each pod fault's evidence (the shape ttg.chaos.probes.faults_took_effect judges): the pod's exit status as its
    container status reports it, and the chunk count at injection. Before the method (the baseline): no faults."""
    sweep = _state.get("sweep")
    if sweep is None:
        return {"phase": "baseline", "faults": []}
    assert sweep.runtime is not None
    deadline = time.monotonic() + 120.0  # a terminated pod may still be finishing its chunk
    faults = []
    for inj in (i for i in sweep.injections if i.kind in EXPECTED_EXIT):
        while (code := sweep.runtime.exit_codes().get(inj.target)) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        evidence = pod_fault_evidence(inj, code)
        note = "" if evidence else f"pod {inj.target} ended with {describe_exit(code)}, injected at {inj.chunks_done}/{inj.chunks_total} chunks"
        faults.append({"kind": inj.kind, "target": inj.target, "note": note, "evidence": evidence})
    return {"phase": "chaos", "faults": faults}


def _deny_policy(run_id: str, broker_labels: dict[str, str]) -> dict[str, Any]:
    """Deny all ingress to the run's broker pod: a policy selecting it with no ingress rule (labelled as the run's, so
    ``ttg k8s down`` removes it if the heal never ran)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"ttg-deny-{run_id}", "labels": labels(run_id, "broker")},
        "spec": {"podSelector": {"matchLabels": broker_labels}, "policyTypes": ["Ingress"], "ingress": []},
    }


def partition_broker(run_id: str, configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Cut the run's broker off: its allow policy out, a deny-all in (NetworkPolicies only add allowances, so the deny
    works only without the allow), then every client connection closed from inside the broker pod."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    sweep, cluster = _sweep(), _cluster(configuration)
    settings = ManifestSettings(run_id, sweep.cfg, namespace=cluster.namespace)
    allow = next(d for d in documents(settings) if d["kind"] == "NetworkPolicy")
    net, core = client.NetworkingV1Api(cluster.api_client), client.CoreV1Api(cluster.api_client)
    deny = _deny_policy(run_id, allow["spec"]["podSelector"]["matchLabels"])
    # Each step on its own: a deny left over from an unhealed earlier run (409) must not keep the allow in place.
    try:
        net.create_namespaced_network_policy(cluster.namespace, deny)
    except ApiException as e:
        if e.status != 409:
            raise ActivityFailed(f"could not deny ingress to the broker: {e.status} {e.reason}") from None
    try:
        net.delete_namespaced_network_policy(allow["metadata"]["name"], cluster.namespace)
    except ApiException as e:
        if e.status != 404:
            raise ActivityFailed(f"could not remove the broker's allow policy: {e.status} {e.reason}") from None
    spec = backends.backend(sweep.cfg.sweep.backend)
    pod = f"{settings.broker_host}-0"
    try:
        said = exec_in_pod(core, cluster.namespace, pod, spec.name, spec.k8s_cut_clients)
    except ApiException as e:
        raise ActivityFailed(f"could not close the broker's client connections in {pod}: {e.status} {e.reason}") from None
    inj = sweep.inject("partition-broker", pod, " ".join(str(said).split())[:200])
    return {"pod": pod, "closed": inj.said, "chunks_done": inj.chunks_done, "chunks": inj.chunks_total}


def heal_broker_partition(run_id: str, configuration: dict[str, Any] | None = None) -> str:
    """Undo the partition: the deny policy out, the run's own broker policy back. Safe to run twice, or with no partition."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    cluster = _cluster(configuration)
    sweep = _state.get("sweep")
    cfg = sweep.cfg if sweep is not None else _config(configuration)
    net = client.NetworkingV1Api(cluster.api_client)
    try:
        net.delete_namespaced_network_policy(f"ttg-deny-{run_id}", cluster.namespace)
    except ApiException as e:
        if e.status != 404:
            raise ActivityFailed(f"could not remove the deny policy: {e.status} {e.reason}") from None
    allow = next(d for d in documents(ManifestSettings(run_id, cfg, namespace=cluster.namespace)) if d["kind"] == "NetworkPolicy")
    try:  # owned by the coordinator Job again, so the run's TTL still takes it
        job = client.BatchV1Api(cluster.api_client).read_namespaced_job(coordinator_job(run_id), cluster.namespace)
        allow = with_owner(allow, {"name": job.metadata.name, "uid": job.metadata.uid})
    except ApiException:
        pass  # no coordinator Job (a rollback after a failed deploy): unowned, `ttg k8s down` removes it
    try:
        net.create_namespaced_network_policy(cluster.namespace, allow)
    except ApiException as e:
        if e.status != 409:
            raise ActivityFailed(f"could not restore the broker policy: {e.status} {e.reason}") from None
    return f"partition of run {run_id} healed"


def progress_stalled(min_s: float = 4.0) -> dict[str, Any]:
    """Proof the partition cut the broker off mid-sweep: the coordinator's progress stood still for ``min_s`` or more
    after the cut, and its refused reconnects."""
    sweep = _state.get("sweep")
    if sweep is None:
        return {"phase": "baseline", "faults": []}
    faults = []
    for inj in (i for i in sweep.injections if i.kind == "partition-broker"):
        stall = longest_stall_s(sweep.progress_at, since=inj.at - LINE_EVERY_S)
        refused = sum(1 for t in sweep.refused_at if t >= inj.at)
        evidence = partition_evidence(inj, stall, refused, float(min_s))
        note = "" if evidence else f"longest stall {stall:.1f} s after the cut at {inj.chunks_done}/{inj.chunks_total} chunks"
        faults.append({"kind": "partition-broker", "target": inj.target, "note": note, "evidence": evidence})
    return {"phase": "chaos", "faults": faults}


def kubernetes_sweep_verdict(run_id: str, timeout_s: float = 3600.0, configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """The chaos run's verdict after the method; before it, the verdict of a fault-free baseline run (then removed)."""
    sweep = _state.get("sweep")
    phase = "chaos"
    if sweep is None:
        phase, sweep = "baseline", _deploy(configuration, f"{run_id}-baseline", timeout_s)
    record = sweep.wait_record(timeout_s)
    if phase == "baseline":
        sweep.cluster.down(sweep.run_id)
    v = record.verdict
    return {"phase": phase, "run_id": record.run_id, "ok": v.ok, "lost": v.lost, "lost_chunk_ids": v.lost_chunk_ids[:50],
            "duplicates": v.duplicates, "dead_lettered": v.dead_lettered, "dead_letter_ids": v.dead_letter_ids[:50],
            "mismatches": v.mismatches, "checksum_ok": v.checksum_ok, "wall_s": record.wall_s}  # fmt: skip


def stop_kubernetes_sweep(run_id: str, configuration: dict[str, Any] | None = None) -> list[str]:
    """The rollback: delete every TTG object of the run and of its baseline. Safe to run twice."""
    sweep = _state.pop("sweep", None)
    if sweep is not None and sweep.runtime is not None:
        sweep.runtime.watch.close()
    cluster = _cluster(configuration)
    try:
        return cluster.down(run_id) + cluster.down(f"{run_id}-baseline")
    except TTGError as e:
        raise ActivityFailed(str(e)) from None
