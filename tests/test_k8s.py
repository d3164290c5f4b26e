"""The Kubernetes runtime without a cluster: manifests checked offline against the Kubernetes schemas, and the
client code checked against a loopback stand-in of the API endpoints it calls (tests/k8s_standin.py, NOT a cluster).
"""

from __future__ import annotations

import json
import signal
from typing import Any

import click
import pytest
from kubernetes_validate import validate

from tests.k8s_standin import StandInAPI
from ttg.cli import cli
from ttg.config import load_run_config
from ttg.errors import ConfigError, RuntimeStartError
from ttg.k8s.cluster import Cluster, ClusterError
from ttg.k8s.launch import record_from_log
from ttg.k8s.manifests import ManifestSettings, documents, render
from ttg.k8s.runtime import KubernetesRuntime
from ttg.record import RunRecord
from ttg.verdict import Verdict

COMBOS = [(b, m) for b in ("redis", "rabbitmq") for m in ("queue", "static")]
SCHEMA_VERSIONS = ("1.30", "1.33")


def settings(backend: str = "redis", mode: str = "queue", workers: int = 6, run_id: str = "r1", **given: Any) -> ManifestSettings:
    cfg = load_run_config({"backend": backend, "mode": mode, "workers": workers, "runtime": "kubernetes", **given}, env={})
    return ManifestSettings(run_id, cfg)


def by_kind(docs: list[dict[str, Any]], kind: str, component: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (component is None or d["metadata"]["labels"].get("app.kubernetes.io/component") == component)]


@pytest.mark.parametrize(("backend", "mode"), COMBOS, ids=[f"{b}-{m}" for b, m in COMBOS])
def test_every_manifest_validates_against_the_kubernetes_schemas(backend: str, mode: str) -> None:
    docs = documents(settings(backend, mode))
    assert {d["kind"] for d in docs} >= {"Namespace", "Secret", "Service", "StatefulSet", "NetworkPolicy", "Role", "RoleBinding", "Job"}
    for version in SCHEMA_VERSIONS:
        for doc in docs:
            validate(doc, version, strict=True)  # raises with the offending field


def test_the_queue_worker_job_tolerates_a_killed_pod() -> None:
    job = by_kind(documents(settings(workers=6)), "Job", "worker")[0]["spec"]
    assert job["parallelism"] == 6 and "completions" not in job  # work-queue pattern: done when the pods exit 0
    rules = job["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert any(r["action"] == "FailJob" and r["onExitCodes"]["values"] == [2] for r in rules)
    assert job["backoffLimit"] >= 6 and job["podReplacementPolicy"] == "Failed"
    assert job["template"]["spec"]["restartPolicy"] == "Never"  # required by podFailurePolicy


def test_a_disrupted_coordinator_is_replaced_and_resumes_the_run() -> None:
    job = by_kind(documents(settings(workers=6)), "Job", "coordinator")[0]["spec"]
    assert job["podFailurePolicy"]["rules"][0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert job["backoffLimit"] > 0 and job["podReplacementPolicy"] == "Failed"  # never two coordinators at once
    assert "--resume" in job["template"]["spec"]["containers"][0]["args"]


def test_the_static_mode_is_an_indexed_job_whose_lost_index_is_reported_not_retried() -> None:
    docs = documents(settings(mode="static", workers=4, params=100_000, chunk=1_000))
    job = by_kind(docs, "Job", "worker")[0]["spec"]
    assert job["completionMode"] == "Indexed" and job["completions"] == job["parallelism"] == 4
    assert job["backoffLimitPerIndex"] == 0 and job["maxFailedIndexes"] == 4
    container = job["template"]["spec"]["containers"][0]
    assert container["args"][container["args"].index("--static") + 1] == "$(JOB_INDEX)/4"
    index_env = next(e for e in container["env"] if e["name"] == "JOB_INDEX")
    assert index_env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.annotations['batch.kubernetes.io/job-completion-index']"


@pytest.mark.parametrize("backend", ["redis", "rabbitmq"])
def test_pods_run_non_root_without_privileges_or_needless_tokens(backend: str) -> None:
    docs = documents(settings(backend))
    pods = [(d["metadata"]["labels"]["app.kubernetes.io/component"], d["spec"]["template"]["spec"]) for d in docs if d["kind"] in ("Job", "StatefulSet")]
    assert len(pods) == 3
    for component, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is (component == "coordinator"), component  # only it talks to the API
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"] and sc["runAsNonRoot"] is True
            assert "limits" in c["resources"] and "requests" in c["resources"]
            if component != "broker" or backend == "redis":
                assert sc["readOnlyRootFilesystem"] is True, component


def test_the_broker_needs_the_generated_secret_and_admits_only_the_runs_pods() -> None:
    a, b = settings(run_id="r1"), settings(run_id="r1")
    assert a.broker_password != b.broker_password and len(a.broker_password) >= 24
    docs = documents(a)
    text = render(a)
    assert text.count(a.broker_password) == 2  # in the Secret's password and url, nowhere else (no args, no env values)
    redis = by_kind(docs, "StatefulSet")[0]["spec"]["template"]["spec"]["containers"][0]
    assert "$(REDIS_PASSWORD)" in redis["args"] and "--appendonly" in redis["args"]
    policy = by_kind(docs, "NetworkPolicy")[0]["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "broker"
    assert policy["ingress"][0]["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "ttg", "ttg.dev/run-id": "r1"}}}]
    assert [p["port"] for p in policy["ingress"][0]["ports"]] == [6379]
    for doc in docs:  # everything but the shared namespace is this run's, so down/cleanup find exactly it
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "ttg"
        assert doc["kind"] == "Namespace" or labels["ttg.dev/run-id"] == "r1"


@pytest.mark.parametrize("mode", ["queue", "static"])
def test_the_pods_arguments_are_ones_the_ttg_cli_accepts(mode: str) -> None:
    docs = documents(settings(mode=mode, faults=("kill-pod@30%",) if mode == "queue" else ()))
    env = {"$(POD_NAME)": "ttg-workers-r1-abcde", "$(JOB_INDEX)/6": "2/6"}
    for component in ("worker", "coordinator"):
        args = [env.get(a, a) for a in by_kind(docs, "Job", component)[0]["spec"]["template"]["spec"]["containers"][0]["args"]]
        command = cli.commands[args[0]]
        with click.Context(command) as ctx:
            command.parse_args(ctx, args[1:])  # an unknown or malformed option raises here


def test_render_refuses_what_cannot_run_on_kubernetes() -> None:
    with pytest.raises(ConfigError, match="local-runtime fault"):
        settings(faults=("partition-broker@30%:2s",))
    with pytest.raises(ConfigError, match="drop --broker-url"):
        render(settings(broker_url="redis://elsewhere:6379/0"))


def test_the_run_record_is_read_from_the_end_of_the_coordinator_log() -> None:
    fields: dict[str, Any] = {f: 0 for f in RunRecord.__dataclass_fields__}
    fields.update(run_id="r1", ttg_version="0.1.0", backend="redis", runtime="kubernetes", mode="queue", algorithm="demo")
    verdict = {f: 0 for f in Verdict.__dataclass_fields__} | {"ok": True, "verify": "full", "lost_chunk_ids": [], "dead_letter_ids": []}
    fields.update(started_at="t0", finished_at="t1", verdict=verdict, faults=[{"kind": "kill-pod", "target": "w0", "at_s": 1.0, "at_chunks": 3}])
    fields.update(timeline=[], grid=[], worker_exit_codes={}, broker_stats={}, run_dir="/results/r1", broker_url=None, broker_startup_s=None)
    record = RunRecord.from_dict(fields)
    log = 'progress 10/100 chunks\n{\n  "not": "a record"\n}\n' + json.dumps({**record.to_dict(), "a_future_field": 1}, indent=2) + "\n"
    assert record_from_log(log) == record
    with pytest.raises(ClusterError, match="holds no run record"):
        record_from_log("progress 10/100 chunks\nTraceback ...\n")


# -- the client code against the stand-in (not a cluster) ---------------------------------------------------------
@pytest.fixture
def api() -> Any:
    with StandInAPI() as standin:
        yield standin


def test_apply_creates_every_object_and_reuses_the_namespace(api: StandInAPI) -> None:
    cluster = Cluster(api.client(), "ttg")
    created = cluster.apply(documents(settings(run_id="r1")))
    assert "Job/ttg-workers-r1" in created and "StatefulSet/ttg-redis-r1" in created
    again = cluster.apply(documents(settings(run_id="r2")))  # the namespace exists now: reused, not an error
    assert not any(c.startswith("Namespace/") for c in again)
    assert api.names("jobs") == ["ttg-coordinator-r1", "ttg-coordinator-r2", "ttg-workers-r1", "ttg-workers-r2"]


def test_down_and_cleanup_touch_only_ttg_objects_of_the_chosen_runs(api: StandInAPI) -> None:
    cluster = Cluster(api.client(), "ttg")
    for run in ("done", "busy"):
        cluster.apply(documents(settings(run_id=run)))
    api.put("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "someone-elses", "namespace": "ttg", "labels": {"app": "x"}}})
    done = api.objects[("jobs", "ttg", "ttg-coordinator-done")]
    done["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    states = {s.run_id: s for s in cluster.runs()}
    assert states["done"].coordinator == "complete" and states["busy"].coordinator == "running"
    doomed = cluster.cleanup()
    assert {r.run_id for r in doomed} == {"done"} and len(doomed) == states["done"].resources
    cluster.delete(doomed)
    assert {r.run_id for r in cluster.resources()} == {"busy"}
    deleted = cluster.down("busy")
    assert "Job/ttg-workers-busy" in deleted and cluster.resources() == []
    assert api.names("secrets") == ["someone-elses"] and api.names("namespaces") == ["ttg"]  # never touched
    selectors = {q["labelSelector"][0] for m, _, q in api.requests if m == "GET" and "labelSelector" in q}
    assert selectors == {"app.kubernetes.io/managed-by=ttg", "app.kubernetes.io/managed-by=ttg,ttg.dev/run-id=busy"}


def _pod(name: str, phase: str, exit_code: int | None = None, reason: str = "Error") -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "ttg", "app.kubernetes.io/component": "worker", "ttg.dev/run-id": "r1", "app.kubernetes.io/managed-by": "ttg"}
    status: dict[str, Any] = {"phase": phase}
    if exit_code is not None:
        terminated = {"exitCode": exit_code, "reason": reason}
        status["containerStatuses"] = [{"name": "worker", "ready": False, "restartCount": 0, "image": "i", "imageID": "", "state": {"terminated": terminated}}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ttg", "labels": labels}, "spec": {"containers": []}, "status": status}


def test_the_runtime_lists_kills_and_reads_exit_codes_of_the_worker_pods(api: StandInAPI) -> None:
    runtime = KubernetesRuntime(api.client(), "ttg", "r1", poll_s=0.01)
    with pytest.raises(RuntimeStartError, match="worker Job ttg-workers-r1 not found"):
        runtime.start([])
    Cluster(api.client(), "ttg").apply(documents(settings(run_id="r1")))
    runtime.start([])
    api.put("pods", _pod("w-a", "Running"))
    api.put("pods", _pod("w-b", "Running"))
    api.put("pods", _pod("w-c", "Succeeded", 0, "Completed"))
    api.put("pods", _pod("w-d", "Failed", 137))
    api.logs["w-b"] = "one\ntwo\nthree\nfour"
    assert sorted(runtime.alive()) == ["w-a", "w-b"]
    assert runtime.exit_codes() == {"w-a": None, "w-b": None, "w-c": 0, "w-d": -9}
    assert runtime.describe_failure("w-b") == "two | three | four"
    runtime.kill("w-a", signal.SIGKILL)
    runtime.kill("w-b", signal.SIGTERM)
    deletes = [(path.rsplit("/", 1)[1], q) for m, path, q in api.requests if m == "DELETE"]
    assert deletes[0] == ("w-a", {"gracePeriodSeconds": ["0"]})  # SIGKILL: no grace, a crash
    assert deletes[1] == ("w-b", {})  # SIGTERM: the pod's grace period, the worker finishes its chunk
    assert runtime.exit_codes()["w-a"] == -signal.SIGKILL
    assert runtime.alive() == [] and runtime.wait(timeout_s=1)


def test_the_runtime_asks_the_api_server_at_most_once_per_poll_interval(api: StandInAPI) -> None:
    runtime = KubernetesRuntime(api.client(), "ttg", "r1", poll_s=60.0)
    api.put("pods", _pod("w-a", "Running"))

    def pod_lists() -> int:
        return sum(1 for m, path, _ in api.requests if m == "GET" and path.endswith("/pods"))

    assert runtime.alive() == ["w-a"] and runtime.alive() == ["w-a"] and runtime.exit_codes() == {"w-a": None}
    assert pod_lists() == 1  # the collector's many calls a second cost one request per interval
    runtime.kill("w-a", signal.SIGKILL)
    assert runtime.alive() == [] and pod_lists() == 2  # a kill makes the next look fresh
