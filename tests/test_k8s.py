"""The Kubernetes runtime without a cluster: manifests checked offline against the Kubernetes schemas, and the
client code checked against a loopback stand-in of the API endpoints it calls (tests/k8s_standin.py, NOT a cluster).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from pathlib import Path
from typing import Any

import click
import pytest
from kubernetes_validate import validate

from tests.k8s_standin import StandInAPI
from ttg.cli import cli
from ttg.config import load_run_config
from ttg.errors import ConfigError, FaultNotInjected, RuntimeStartError
from ttg.k8s.cluster import Cluster, ClusterError
from ttg.k8s.launch import JobFollower, load_record, record_from_log
from ttg.k8s.manifests import IMAGE, ManifestSettings, documents, render
from ttg.k8s.records import record_text, save_record
from ttg.k8s.runtime import WORKER_PID_FILE, KubernetesRuntime, kill_argv
from ttg.record import RunRecord
from ttg.verdict import Verdict

COMBOS = [(b, m) for b in ("redis", "rabbitmq") for m in ("queue", "static")]
SCHEMA_VERSIONS = ("1.30", "1.31", "1.32", "1.33")


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
    record = _record(faults=[{"kind": "kill-pod", "target": "w0", "at_s": 1.0, "at_chunks": 3}])
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
    assert cluster.finished_runs() == ["done"] and cluster.finished_runs(include_running=True) == ["busy", "done"]
    deleted = cluster.down("done")
    assert len(deleted) == states["done"].resources and {r.run_id for r in cluster.resources()} == {"busy"}
    deleted = cluster.down("busy")
    assert "Job/ttg-workers-busy" in deleted and cluster.resources() == []
    assert api.names("secrets") == ["someone-elses"] and api.names("namespaces") == ["ttg"]  # never touched
    selectors = {q["labelSelector"][0] for m, _, q in api.requests if "labelSelector" in q}
    assert selectors == {"app.kubernetes.io/managed-by=ttg", *(f"app.kubernetes.io/managed-by=ttg,ttg.dev/run-id={r}" for r in ("done", "busy"))}


def test_teardown_goes_on_past_objects_that_vanish_mid_delete_and_leaves_nothing_labelled(api: StandInAPI) -> None:
    cluster = Cluster(api.client(), "ttg")
    cluster.apply(documents(settings(run_id="r1")))
    for i in range(3):
        api.put("pods", _pod(f"w-{i}", "Running"))
    api.put("pods", {**_pod("ttg-redis-r1-0", "Running"), "metadata": {"name": "ttg-redis-r1-0", "namespace": "ttg", "labels": _broker_labels()}})

    def garbage_collector(standin: StandInAPI, job: str) -> None:  # deleting a Job: its pods go (background cascade)
        if job == "ttg-workers-r1":
            for name in standin.names("pods"):
                if name.startswith("w-"):
                    standin.remove("pods", "ttg", name)

    def raced_delete(standin: StandInAPI, name: str) -> None:  # each pod gone just before its own DELETE arrives: a 404
        standin.remove("pods", "ttg", name)

    api.on_delete["jobs"] = garbage_collector
    api.on_delete["pods"] = raced_delete
    deleted = cluster.down("r1")
    assert cluster.resources() == [] and api.names("pods") == []
    kinds = [d.split("/")[0] for d in deleted]
    assert kinds.index("Job") < kinds.index("StatefulSet") < kinds.index("Pod") < kinds.index("Secret")  # owners first
    assert {"PersistentVolumeClaim", "Secret", "Role", "RoleBinding", "ServiceAccount", "NetworkPolicy", "Service"} <= set(kinds)
    assert cluster.down("r1") == []  # again: nothing left, and no error


def _broker_labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": "ttg", "app.kubernetes.io/component": "broker", "ttg.dev/run-id": "r1", "app.kubernetes.io/managed-by": "ttg"}


def test_teardown_falls_back_to_one_delete_per_object_where_a_collection_cannot_be_deleted(api: StandInAPI) -> None:
    cluster = Cluster(api.client(), "ttg")
    cluster.apply(documents(settings(run_id="r1")))
    original = api.handle

    def no_service_collections(method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        if method == "DELETE" and path.endswith("/services"):  # a server before 1.31: no DELETE on the collection
            api.requests.append((method, path, query))
            return 405, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "MethodNotAllowed", "code": 405}
        return original(method, path, query, body)

    api.handle = no_service_collections  # type: ignore[method-assign]
    api.on_delete["services"] = lambda standin, name: standin.remove("services", "ttg", name)  # gone first: a 404
    assert "Service/ttg-redis-r1" in cluster.down("r1")
    assert api.names("services") == [] and cluster.resources() == []


def test_teardown_without_any_collection_delete_meets_a_404_for_every_object_and_leaves_nothing(api: StandInAPI) -> None:
    # Every DELETE is per object here, and every object is gone just before its own DELETE arrives (the garbage
    # collector took it): each one is a 404 that reaches the client, and each must read as "already gone".
    cluster = Cluster(api.client(), "ttg")
    cluster.apply(documents(settings(run_id="r1")))
    for i in range(3):
        api.put("pods", _pod(f"w-{i}", "Running"))
    original = api.handle

    def no_collections(method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        if method == "DELETE" and "labelSelector" in query:
            api.requests.append((method, path, query))
            return 405, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "MethodNotAllowed", "code": 405}
        return original(method, path, query, body)

    api.handle = no_collections  # type: ignore[method-assign]
    for kind in api.kinds():
        api.on_delete[kind] = lambda standin, name, kind=kind: standin.remove(kind, "ttg", name)
    deleted = cluster.down("r1")
    codes = [code for method, path, code in api.responses if method == "DELETE" and code != 405]
    assert cluster.resources() == [] and api.names("pods") == []
    assert codes and set(codes) == {404} and len(codes) >= len(deleted) >= 12, "every per-object DELETE met a 404"
    assert cluster.down("r1") == []


def _pod(name: str, phase: str, exit_code: int | None = None, reason: str = "Error") -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "ttg", "app.kubernetes.io/component": "worker", "ttg.dev/run-id": "r1", "app.kubernetes.io/managed-by": "ttg"}
    status: dict[str, Any] = {"phase": phase}
    if exit_code is not None:
        terminated = {"exitCode": exit_code, "reason": reason}
        status["containerStatuses"] = [{"name": "worker", "ready": False, "restartCount": 0, "image": "i", "imageID": "", "state": {"terminated": terminated}}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ttg", "labels": labels}, "spec": {"containers": []}, "status": status}


def _after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def eventually(check: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the watch never caught up"
        time.sleep(0.02)


def test_the_runtime_reads_exit_codes_from_container_statuses_and_kills_through_exec_or_delete(api: StandInAPI) -> None:
    execs: list[tuple[str, list[str]]] = []
    runtime = KubernetesRuntime(api.client(), "ttg", "r1", poll_s=0.01, exec_in_pod=lambda pod, argv: execs.append((pod, list(argv))) or "")
    with pytest.raises(RuntimeStartError, match="worker Job ttg-workers-r1 not found"):
        runtime.start([])
    Cluster(api.client(), "ttg").apply(documents(settings(run_id="r1")))
    runtime.start([])
    api.put("pods", _pod("w-a", "Running"))
    api.put("pods", _pod("w-b", "Running"))
    api.put("pods", _pod("w-c", "Succeeded", 0, "Completed"))
    api.put("pods", _pod("w-d", "Failed", 137))
    api.put("pods", _pod("w-e", "Failed", 143))
    api.logs["w-b"] = "one\ntwo\nthree\nfour"
    eventually(lambda: len(runtime.exit_codes()) == 5)
    assert sorted(runtime.alive()) == ["w-a", "w-b"]
    # As the container statuses report them, never assumed from the fault sent: 137 is a SIGKILL, 143 a drain on SIGTERM.
    assert runtime.exit_codes() == {"w-a": None, "w-b": None, "w-c": 0, "w-d": 137, "w-e": 143}
    assert runtime.describe_failure("w-b") == "two | three | four"
    # The coordinator hands an exited pod's chunks on by this key: a pod's worker is `ttg worker --worker-id $(POD_NAME)`,
    # whose consumer is "<pod>.<pid>", and a key matches the consumers named "<key>.<anything>".
    assert runtime.consumer_key("w-d") == "w-d"
    worker_args = next(d for d in documents(settings(run_id="r1")) if d["kind"] == "Job" and "worker" in d["metadata"]["name"])
    assert "$(POD_NAME)" in _after(worker_args["spec"]["template"]["spec"]["containers"][0]["args"], "--worker-id")
    runtime.kill("w-a", signal.SIGKILL)
    assert execs == [("w-a", kill_argv())] and kill_argv() == ["sh", "-c", f'kill -s KILL "$(cat {WORKER_PID_FILE})"']
    assert not any(m == "DELETE" and path.endswith("/w-a") for m, path, _ in api.requests)  # a DELETE would SIGTERM first
    runtime.kill("w-b", signal.SIGTERM)
    deletes = [(path.rsplit("/", 1)[1], q) for m, path, q in api.requests if m == "DELETE"]
    assert deletes == [("w-b", {})]  # SIGTERM: the pod's own grace period, the worker finishes its chunk
    api.put("pods", _pod("w-a", "Failed", 137))  # what the kubelet reports once tini saw its child SIGKILLed
    eventually(lambda: runtime.exit_codes()["w-a"] == 137)
    eventually(lambda: runtime.alive() == [])
    assert runtime.wait(timeout_s=1)
    runtime.watch.close()


def test_a_refused_or_failed_exec_is_a_fault_not_injected(api: StandInAPI) -> None:
    runtime = KubernetesRuntime(api.client(), "ttg", "r1", exec_in_pod=lambda pod, argv: "cat: /tmp/ttg-worker.pid: No such file or directory")
    with pytest.raises(FaultNotInjected, match=r"could not SIGKILL the worker in pod w-a: cat: /tmp/ttg-worker\.pid"):
        runtime.kill("w-a", signal.SIGKILL)
    with pytest.raises(FaultNotInjected, match="not SIGSTOP"):
        runtime.kill("w-a", signal.SIGSTOP)
    with pytest.raises(FaultNotInjected, match="could not delete pod w-zz: 404"):
        runtime.kill("w-zz", signal.SIGTERM)
    runtime.watch.close()


def test_the_runtime_lists_once_and_then_follows_a_watch(api: StandInAPI) -> None:
    api.put("pods", _pod("w-a", "Running"))
    runtime = KubernetesRuntime(api.client(), "ttg", "r1")
    assert runtime.alive() == ["w-a"]
    for _ in range(20):  # the collector asks many times a second: answered from the watch's cache
        assert runtime.alive() == ["w-a"] and runtime.exit_codes() == {"w-a": None}
    api.put("pods", _pod("w-b", "Running"))
    eventually(lambda: sorted(runtime.alive()) == ["w-a", "w-b"])
    api.remove("pods", "ttg", "w-a")  # the pod object deleted (its Job's TTL, a forced delete): it is not alive
    eventually(lambda: runtime.alive() == ["w-b"])
    assert runtime.watch.lists == 1
    watches = [q for m, path, q in api.requests if m == "GET" and path.endswith("/pods") and q.get("watch") == ["true"]]
    assert watches and all(q["labelSelector"] == ["app.kubernetes.io/component=worker,ttg.dev/run-id=r1"] for q in watches)
    versions = [int(q["resourceVersion"][0]) for q in watches]
    assert versions == sorted(versions)  # each watch goes on from the last change it saw, never back to a LIST
    runtime.watch.close()


# -- what the coordinator may do: derived from its client calls, compared with its Role ------------------------------
_VERBS = {"list": "list", "read": "get", "create": "create", "replace": "update", "patch": "patch", "delete": "delete"}
_PLURALS = {"pod": "pods", "job": "jobs", "config_map": "configmaps", "pod_log": "pods/log", "pod_exec": "pods/exec"}


def needed_permissions() -> set[tuple[str, str, str]]:
    """(api group, resource, verb) for every API call in the in-cluster coordinator's code: ``<verb>_namespaced_<kind>``
    attributes, and ``Watch().stream(list_namespaced_<kind>, ...)``, which also needs ``watch``. From the source, by AST."""
    import ast
    import inspect

    import ttg.k8s.podwatch
    import ttg.k8s.records
    import ttg.k8s.runtime

    def permission(call: str, verb: str | None = None) -> set[tuple[str, str, str]]:
        if call.startswith("connect_get_namespaced_pod_exec"):  # a websocket GET: authorised as get, and also as create on newer servers (see ttg/k8s/rbac.py)
            return {("", "pods/exec", "create"), ("", "pods/exec", "get")}
        prefix, _, kind = call.partition("_namespaced_")
        return {("batch" if kind == "job" else "", _PLURALS[kind], verb or _VERBS[prefix])}

    needed: set[tuple[str, str, str]] = set()
    for module in (ttg.k8s.runtime, ttg.k8s.records, ttg.k8s.podwatch):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.Attribute) and "_namespaced_" in node.attr:
                needed |= permission(node.attr)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "stream" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Attribute) and first.attr.startswith("list_namespaced_"):
                    needed |= permission(first.attr, "watch")
    return needed


def test_the_coordinators_role_grants_exactly_what_its_code_calls() -> None:
    role = by_kind(documents(settings()), "Role")[0]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    needed = needed_permissions()
    assert ("", "pods/log", "get") in needed and ("", "pods/exec", "create") in needed and ("", "pods", "watch") in needed
    assert granted == needed, f"granted but unused: {sorted(granted - needed)}; used but not granted: {sorted(needed - granted)}"


# -- the launcher: ownership, the Job followed across its pods, the durable record ------------------------------------
def test_deploy_makes_the_coordinator_job_own_the_whole_run_and_starts_it_last(api: StandInAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    import ttg.k8s.launch as launch_mod

    monkeypatch.setattr(launch_mod, "connect", lambda context=None: api.client())
    cfg = settings(run_id="r1").cfg
    launch_mod.deploy(cfg, "r1")
    posts = [path for m, path, _ in api.requests if m == "POST"]
    job_post = next(i for i, p in enumerate(posts) if p.endswith("/jobs"))
    assert posts[0].endswith("/namespaces") and job_post == 1  # the coordinator Job right after the namespace, suspended
    job = api.objects[("jobs", "ttg", "ttg-coordinator-r1")]
    uid = job["metadata"]["uid"]
    patches = [(path, i) for i, (m, path, _) in enumerate(api.requests) if m == "PATCH"]
    assert [p for p, _ in patches] == ["/apis/batch/v1/namespaces/ttg/jobs/ttg-coordinator-r1"] and job["spec"]["suspend"] is False
    assert patches[0][1] > max(i for i, (m, _, _) in enumerate(api.requests) if m == "POST")  # started once everything exists
    for (plural, _, name), obj in api.objects.items():
        if plural in ("namespaces",) or name == "ttg-coordinator-r1":
            continue
        if name == "ttg-results-r1":  # the only copy of results.npy: the Job's TTL must not take it
            assert "ownerReferences" not in obj["metadata"]
            continue
        refs = obj["metadata"].get("ownerReferences")
        assert refs == [{"apiVersion": "batch/v1", "kind": "Job", "name": "ttg-coordinator-r1", "uid": uid, "blockOwnerDeletion": False}], (plural, name)


def _record(run_id: str = "r1", ok: bool = True, faults: list[dict[str, Any]] | None = None) -> RunRecord:
    fields: dict[str, Any] = {f: 0 for f in RunRecord.__dataclass_fields__}
    fields.update(run_id=run_id, ttg_version="0.1.0", backend="redis", runtime="kubernetes", mode="queue", algorithm="demo")
    verdict = {f: 0 for f in Verdict.__dataclass_fields__} | {"ok": ok, "verify": "full", "lost_chunk_ids": [], "dead_letter_ids": []}
    fields.update(started_at="t0", finished_at="t1", verdict=verdict, faults=faults or [])
    fields.update(timeline=[], grid=[], worker_exit_codes={}, broker_stats={}, run_dir="/results/r1", broker_url=None, broker_startup_s=None)
    return RunRecord.from_dict(fields)


def _coordinator_pod(name: str, phase: str, created: str) -> dict[str, Any]:
    pod = _pod(name, phase)
    pod["metadata"]["labels"]["app.kubernetes.io/component"] = "coordinator"
    pod["metadata"]["creationTimestamp"] = created
    return pod


@pytest.mark.parametrize("saved", [True, False], ids=["from-configmap", "from-last-log"])
def test_the_launcher_follows_the_coordinator_job_across_a_retry_and_reads_its_record(api: StandInAPI, saved: bool) -> None:
    cluster = Cluster(api.client(), "ttg")
    cluster.apply(documents(settings(run_id="r1")))
    api.put("pods", _coordinator_pod("coord-1", "Failed", "2026-01-01T00:00:00Z"))
    api.put("pods", _coordinator_pod("coord-2", "Succeeded", "2026-01-01T00:01:00Z"))
    api.logs["coord-1"] = "progress 10/100 chunks\nterminated (SIGTERM)"
    record = _record()
    api.logs["coord-2"] = "warning: resuming run r1 with 10 of 100 chunks recorded\n" + json.dumps(record.to_dict(), indent=2) + "\n"
    api.objects[("jobs", "ttg", "ttg-coordinator-r1")]["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    if saved:
        save_record(api.client(), "ttg", _record(ok=False))  # the durable copy wins over the log
    lines: list[str] = []
    got = JobFollower(cluster, "r1", lines.append, poll_s=0.01).follow(timeout_s=10)
    assert got.verdict.ok is (not saved)
    assert "progress 10/100 chunks" in lines and any("replacement coord-2 resumes" in line for line in lines)


def test_a_finished_job_without_a_record_says_where_to_look(api: StandInAPI) -> None:
    cluster = Cluster(api.client(), "ttg")
    cluster.apply(documents(settings(run_id="r1")))
    api.put("pods", _coordinator_pod("coord-1", "Failed", "2026-01-01T00:00:00Z"))
    api.logs["coord-1"] = "error: Redis unreachable"
    api.objects[("jobs", "ttg", "ttg-coordinator-r1")]["status"] = {"conditions": [{"type": "Failed", "status": "True"}]}
    with pytest.raises(ClusterError, match=r"ttg-coordinator-r1 failed and left no run record .*kubectl -n ttg logs job/ttg-coordinator-r1"):
        JobFollower(cluster, "r1", lambda line: None, poll_s=0.01).follow(timeout_s=10)


def test_the_record_configmap_is_owned_by_the_coordinator_job_replaced_on_resume_and_fits(api: StandInAPI) -> None:
    Cluster(api.client(), "ttg").apply(documents(settings(run_id="r1")))
    save_record(api.client(), "ttg", _record(ok=False))
    save_record(api.client(), "ttg", _record(ok=True))  # a resumed coordinator judges again: replaced, not a 409
    cm = api.objects[("configmaps", "ttg", "ttg-record-r1")]
    uid = api.objects[("jobs", "ttg", "ttg-coordinator-r1")]["metadata"]["uid"]
    assert cm["metadata"]["ownerReferences"][0]["uid"] == uid and cm["metadata"]["labels"]["ttg.dev/run-id"] == "r1"
    loaded = load_record(api.client(), "ttg", "r1")
    assert loaded is not None and loaded.verdict.ok
    big = _record()
    big = dataclasses.replace(
        big, verdict=dataclasses.replace(big.verdict, lost=10**6, lost_chunk_ids=list(range(10**6))), timeline=[{"t": i} for i in range(10**5)]
    )
    text = record_text(big)
    doc = json.loads(text)
    assert len(text) <= 900_000 and doc["verdict"]["lost"] == 10**6 and doc["verdict"]["lost_chunk_ids"] == list(range(100)) and doc["timeline"] == []


def test_make_kind_e2e_runs_the_whole_kubernetes_half_and_always_deletes_its_cluster() -> None:
    """It cannot run here (no Docker): its command sequence, printed by its dry run, is what is checked."""
    import subprocess
    import sys
    from pathlib import Path

    from ttg.k8s.manifests import IMAGE, RABBITMQ_IMAGE, REDIS_IMAGE
    from ttg.testing.plugin import KIND_NODE_IMAGE

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([str(root / "scripts" / "kind-e2e")], capture_output=True, text=True, timeout=60, cwd=root,
                         env={"KIND_E2E_DRY_RUN": "1", "PY": sys.executable, "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    steps = out.stdout.splitlines()
    assert steps[0] == f"kind create cluster --name ttg --image {KIND_NODE_IMAGE} --wait 180s"
    assert f"kind load docker-image {IMAGE} {REDIS_IMAGE} {RABBITMQ_IMAGE} --name ttg" in steps  # the broker images too
    pytest_step = next(i for i, s in enumerate(steps) if " -m pytest scenarios -m kind " in s)
    experiments = sorted(p.stem for p in (root / "experiments" / "kubernetes").glob("*.json"))
    chaos = [s for s in steps if " run --journal-path " in s]
    assert {(e, b) for e in experiments for b in ("redis", "rabbitmq")} == {
        (s.split("TTG_RUN_ID=e2e-")[1].split()[0].rsplit("-", 1)[0], s.split("TTG_BACKEND=")[1].split()[0]) for s in chaos
    }
    assert all("TTG_KUBE_CONTEXT=kind-ttg" in s for s in chaos) and steps.index(chaos[0]) > pytest_step
    assert any(s.startswith(str(Path(sys.executable).parent / "ttg") + " report ") for s in steps)
    assert steps[-1] == "kind delete cluster --name ttg"  # from the EXIT trap: also when a step failed


def test_a_gitops_render_is_reproducible_with_the_password_from_the_environment() -> None:
    from click.testing import CliRunner

    args = ["k8s", "render", "--backend", "redis", "--run-id", "g1"]
    first = CliRunner().invoke(cli, args, env={"TTG_BROKER_PASSWORD": "s3cret-from-vault-0123"})
    again = CliRunner().invoke(cli, args, env={"TTG_BROKER_PASSWORD": "s3cret-from-vault-0123"})
    assert first.exit_code == 0 and first.stdout == again.stdout and "s3cret-from-vault-0123" in first.stdout
    fresh = [CliRunner().invoke(cli, args, env={"TTG_BROKER_PASSWORD": None}).stdout for _ in range(2)]
    assert fresh[0] != fresh[1]  # without it: a new generated password each time, and the render says so
    bad = CliRunner().invoke(cli, args, env={"TTG_BROKER_PASSWORD": "short"})
    assert bad.exit_code != 0 and "at least 16 characters" in str(bad.exception)


def test_the_image_runs_ttg_under_tini_as_pid_1_and_no_manifest_replaces_that_entrypoint() -> None:
    # kill-pod SIGKILLs the worker's pid through exec. Were the worker PID 1, the kernel would drop that signal (PID 1
    # of a namespace gets only the signals it handles, and SIGKILL from inside its own namespace not at all): the
    # fault would silently do nothing. A `command:` in a manifest would replace the image's ENTRYPOINT, tini included.
    dockerfile = (Path(__file__).resolve().parent.parent / "Dockerfile").read_text()
    entrypoints = [line.split(None, 1)[1] for line in dockerfile.splitlines() if line.startswith("ENTRYPOINT")]
    entry = json.loads(entrypoints[-1])
    assert Path(entry[0]).name == "tini" and entry[1:] == ["--", "ttg"], entry
    for mode in ("queue", "static"):
        for doc in documents(settings(run_id="r1", mode=mode)):
            for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if container["image"] == IMAGE:
                    assert "command" not in container, (doc["metadata"]["name"], container["name"])
