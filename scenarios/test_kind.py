"""Kind scenarios: sweeps on a real Kubernetes cluster. They need Docker and kind and skip here with the exact reason.

``pytest scenarios -m kind -k rabbitmq`` creates (or reuses) the Kind cluster ``ttg``, loads the image, and runs
``ttg run --runtime kubernetes`` (the coordinator in the cluster, workers as a Job) and the Kubernetes experiments.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # pytest-kind is imported by the kind_cluster fixture only: collection works without it
    from pytest_kind import KindCluster

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments" / "kubernetes"


@pytest.fixture
def on_kind(
    kind_cluster: KindCluster, kind_image: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Callable[..., dict[str, Any]]]:
    """``on_kind(backend, *args)``: a ``ttg run --runtime kubernetes`` on the Kind cluster; returns its record; removes the run after.

    With ``--ttg-results DIR`` each record is also written there, for the report (as ``run_sweep`` does)."""
    results = request.config.getoption("ttg_results", None)
    monkeypatch.setenv("KUBECONFIG", str(kind_cluster.kubeconfig_path))
    runs: list[str] = []

    def run(backend: str, *args: str) -> dict[str, Any]:
        run_id = f"t{uuid.uuid4().hex[:8]}"
        runs.append(run_id)
        cmd = [sys.executable, "-m", "ttg", "run", "--runtime", "kubernetes", "--backend", backend, "--image", kind_image, "--run-id", run_id, "--json", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
        assert proc.stdout, proc.stderr
        record: dict[str, Any] = json.loads(proc.stdout)
        if results:
            Path(results).mkdir(parents=True, exist_ok=True)
            doc = {**record, "scenario": request.node.nodeid}
            (Path(results) / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', request.node.name)}--{run_id}.json").write_text(json.dumps(doc, indent=1))
        return record

    yield run
    for run_id in runs:
        subprocess.run([sys.executable, "-m", "ttg", "k8s", "down", run_id], capture_output=True, timeout=120)


@pytest.mark.kind
def test_the_kind_cluster_has_ready_nodes(kind_cluster: KindCluster) -> None:
    out = kind_cluster.kubectl("get", "nodes", "-o", "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}")
    assert out.split() and set(out.split()) == {"True"}, out


@pytest.mark.kind
@pytest.mark.parametrize("backend", ["redis", "rabbitmq"])
@pytest.mark.parametrize(("fault", "status"), [("kill-pod", "137 (SIGKILL)"), ("terminate-pod", "143 (stopped by SIGTERM")])
def test_a_sweep_on_kind_with_a_killed_or_terminated_pod_loses_nothing(on_kind: Callable[..., dict[str, Any]], backend: str, fault: str, status: str) -> None:
    rec = on_kind(backend, "--params", "2000000", "--chunk", "10000", "--workers", "4", "--cost-us", "50", "--fault", f"{fault}@30%")
    f = rec["faults"][0]
    assert rec["runtime"] == "kubernetes" and f["kind"] == fault and status in f["evidence"], rec["faults"]  # read from the pod's status
    v = rec["verdict"]
    assert v["ok"] and v["lost"] == 0 and v["checksum_ok"] and v["chunks_completed"] == 200, v


@pytest.mark.kind
@pytest.mark.parametrize("backend", ["redis", "rabbitmq"])
def test_a_coordinator_pod_deleted_mid_sweep_is_replaced_and_resumes_with_nothing_lost(kind_cluster: KindCluster, kind_image: str, backend: str) -> None:
    run_id = f"t{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "KUBECONFIG": str(kind_cluster.kubeconfig_path)}
    cmd = [sys.executable, "-m", "ttg", "run", "--runtime", "kubernetes", "--backend", backend, "--image", kind_image, "--run-id", run_id, "--json"]
    cmd += ["--params", "2000000", "--chunk", "10000", "--workers", "4", "--cost-us", "100"]
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        selector = f"app.kubernetes.io/component=coordinator,ttg.dev/run-id={run_id}"
        deadline = time.monotonic() + 600
        while "progress" not in kind_cluster.kubectl("logs", "-l", selector, "--tail", "5"):
            assert time.monotonic() < deadline and launcher.poll() is None, launcher.stderr.read() if launcher.stderr else ""
            time.sleep(2)
        time.sleep(5)
        kind_cluster.kubectl("delete", "pod", "-l", selector, "--wait=false")  # SIGTERM: it exits 143, the Job replaces it
        out, err = launcher.communicate(timeout=1200)
        rec = json.loads(out)
        assert rec["resumed_at_chunks"] > 0 and "resumes the run" in err, err[-2000:]
        v = rec["verdict"]
        assert v["ok"] and v["lost"] == 0 and v["chunks_completed"] == 200, v
    finally:
        launcher.kill()
        subprocess.run([sys.executable, "-m", "ttg", "k8s", "down", run_id], capture_output=True, timeout=120, env=env)


@pytest.mark.kind
@pytest.mark.parametrize("backend", ["redis", "rabbitmq"])
def test_static_mode_on_kind_reports_the_killed_pods_block_as_lost(on_kind: Callable[..., dict[str, Any]], backend: str) -> None:
    rec = on_kind(backend, "--mode", "static", "--params", "2000000", "--chunk", "10000", "--workers", "4", "--cost-us", "5", "--fault", "kill-pod@30%")
    assert not rec["verdict"]["ok"] and rec["verdict"]["lost"] > 0


@pytest.mark.kind
@pytest.mark.parametrize("name", ["kill-pod", "terminate-pod", "partition-broker"])
@pytest.mark.parametrize("backend", ["redis", "rabbitmq"])
def test_the_kubernetes_experiment_holds(
    kind_cluster: KindCluster, kind_image: str, chaos_experiment: Callable[..., dict[str, Any]], name: str, backend: str
) -> None:
    settings = {"TTG_BACKEND": backend, "TTG_IMAGE": kind_image, "TTG_KUBE_CONTEXT": f"kind-{kind_cluster.name}", "TTG_RUN_ID": f"x{uuid.uuid4().hex[:8]}"}
    settings["KUBECONFIG"] = str(kind_cluster.kubeconfig_path)  # the context lives in pytest-kind's kubeconfig
    journal = chaos_experiment(EXPERIMENTS / f"{name}.json", **settings)
    assert journal["status"] == "completed" and journal["deviated"] is False, json.dumps(journal.get("steady_states"))[:2000]
