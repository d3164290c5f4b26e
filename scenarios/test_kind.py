"""Kind scenarios: need Docker and kind; skipped here with the exact reason. The Kubernetes issue adds the sweeps."""

from __future__ import annotations

import subprocess

import pytest

from fixtures.plugin import KindCluster


@pytest.mark.kind
def test_the_kind_cluster_has_ready_nodes(kind_cluster: KindCluster) -> None:
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(kind_cluster.kubeconfig), "get", "nodes", "-o", "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.split() and set(out.stdout.split()) == {"True"}, out.stderr
