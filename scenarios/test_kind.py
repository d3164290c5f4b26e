"""Kind scenarios: sweeps on a real Kubernetes cluster. They need Docker and kind and skip here with the exact reason.

``pytest scenarios -m kind -k rabbitmq`` creates (or reuses) the Kind cluster ``ttg``, loads the image, and runs
``ttg run --runtime kubernetes`` (the coordinator in the cluster, workers as a Job) and the Kubernetes experiments.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ttg.testing.plugin import KindCluster

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments" / "kubernetes"


def kubectl(cluster: KindCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "--kubeconfig", str(cluster.kubeconfig), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def on_kind(kind_cluster: KindCluster, kind_image: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., dict[str, Any]]]:
    """``on_kind(backend, *args)``: a ``ttg run --runtime kubernetes`` on the Kind cluster; returns its record; removes the run after."""
    monkeypatch.setenv("KUBECONFIG", str(kind_cluster.kubeconfig))
    runs: list[str] = []

    def run(backend: str, *args: str) -> dict[str, Any]:
        run_id = f"t{uuid.uuid4().hex[:8]}"
        runs.append(run_id)
        cmd = [sys.executable, "-m", "ttg", "run", "--runtime", "kubernetes", "--backend", backend, "--image", kind_image, "--run-id", run_id, "--json", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
        assert proc.stdout, proc.stderr
        record: dict[str, Any] = json.loads(proc.stdout)
        return record

    yield run
    for run_id in runs:
        subprocess.run([sys.executable, "-m", "ttg", "k8s", "down", run_id], capture_output=True, timeout=120)


@pytest.mark.kind
def test_the_kind_cluster_has_ready_nodes(kind_cluster: KindCluster) -> None:
    out = kubectl(kind_cluster, "get", "nodes", "-o", "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}")
    assert out.returncode == 0 and out.stdout.split() and set(out.stdout.split()) == {"True"}, out.stderr


@pytest.mark.kind
@pytest.mark.parametrize("backend", ["redis", "rabbitmq"])
def test_a_sweep_on_kind_with_a_killed_pod_loses_nothing(on_kind: Callable[..., dict[str, Any]], backend: str) -> None:
    rec = on_kind(backend, "--params", "2000000", "--chunk", "10000", "--workers", "4", "--cost-us", "5", "--fault", "kill-pod@30%")
    assert rec["runtime"] == "kubernetes" and rec["faults"][0]["kind"] == "kill-pod" and rec["faults"][0]["evidence"], rec["faults"]
    v = rec["verdict"]
    assert v["ok"] and v["lost"] == 0 and v["checksum_ok"] and v["chunks_completed"] == 200, v


@pytest.mark.kind
@pytest.mark.parametrize("backend", ["redis", "rabbitmq"])
def test_static_mode_on_kind_reports_the_killed_pods_block_as_lost(on_kind: Callable[..., dict[str, Any]], backend: str) -> None:
    rec = on_kind(backend, "--mode", "static", "--params", "2000000", "--chunk", "10000", "--workers", "4", "--cost-us", "5", "--fault", "kill-pod@30%")
    assert not rec["verdict"]["ok"] and rec["verdict"]["lost"] > 0


@pytest.mark.kind
@pytest.mark.parametrize("name", ["kill-pod", "partition-broker"])
@pytest.mark.parametrize("backend", ["redis", "rabbitmq"])
def test_the_kubernetes_experiment_holds(
    kind_cluster: KindCluster, kind_image: str, chaos_experiment: Callable[..., dict[str, Any]], name: str, backend: str
) -> None:
    settings = {"TTG_BACKEND": backend, "TTG_IMAGE": kind_image, "TTG_KUBE_CONTEXT": f"kind-{kind_cluster.name}", "TTG_RUN_ID": f"x{uuid.uuid4().hex[:8]}"}
    journal = chaos_experiment(EXPERIMENTS / f"{name}.json", **settings)
    assert journal["status"] == "completed" and journal["deviated"] is False, json.dumps(journal.get("steady_states"))[:2000]
